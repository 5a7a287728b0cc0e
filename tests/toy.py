"""A tiny learnable segmentation task for trainer tests: bright squares on noise, two classes."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class SquaresDataset(Dataset):
    def __init__(self, n: int, labeled: bool, size: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            label = torch.zeros(1, size, size, dtype=torch.long)
            y, x = torch.randint(0, size - 6, (2,), generator=generator).tolist()
            label[:, y : y + 6, x : x + 6] = 1
            image = 0.8 * label.float() + 0.3 * torch.randn(1, size, size, generator=generator)
            self.items.append({"image": image, "label": label} if labeled else {"image": image})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def tiny_net(out_channels: int = 2) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Dropout2d(0.1),
        torch.nn.Conv2d(8, out_channels, 3, padding=1),
    )
