import json
import math

import h5py
import numpy as np
import pytest
import torch
from bundle_data import prepared_phantoms
from semizoo.cli import main
from semizoo.diagnostics import teacher_view_areas
from semizoo.networks import SSL4MISUNet
from torch import nn


class Threshold(nn.Module):
    """Class 1 where the input exceeds 0.5, class 0 elsewhere (a step, so noise flips pixels near 0.5)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 1e6 * (x - 0.5)], dim=1)


def test_teacher_view_matches_the_gaussian_tail():
    images = torch.full((8, 1, 32, 32), 0.55)
    labels = np.ones((8, 32, 32), np.int64)
    result = teacher_view_areas(Threshold(), images, 2, labels, noise_std=0.1, noise_clip=0.2)
    # a pixel at 0.55 stays class 1 unless the noise is below -0.05: P = Phi(0.5)
    expected = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))
    assert result["areas"]["eval"] == [0, 8 * 32 * 32] and result["areas"]["train"] == [0, 8 * 32 * 32]
    assert result["noise_effect"][1] == pytest.approx(expected, abs=0.02)
    assert result["noise_effect"][0] is None  # no class-0 pixels in the train view
    assert result["ratio_to_reference"]["teacher"][1] == pytest.approx(expected, abs=0.02)
    assert result["ratio_to_reference"]["eval"] == [None, 1.0]
    # clipping at 0.04 < 0.05 leaves every pixel above the threshold
    clipped = teacher_view_areas(Threshold(), images, 2, noise_std=0.1, noise_clip=0.04)
    assert clipped["areas"]["teacher"] == [0, 8 * 32 * 32] and "reference" not in clipped


def test_averaged_draws_follow_the_binomial_majority():
    images = torch.full((8, 1, 32, 32), 0.55)
    result = teacher_view_areas(Threshold(), images, 2, noise_std=0.1, noise_clip=0.2, draws=7)
    # averaging 7 (hard) draws before the argmax keeps class 1 when at least 4 of them are above the threshold
    q = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))
    expected = sum(math.comb(7, k) * q**k * (1 - q) ** (7 - k) for k in range(4, 8))
    assert result["draws"] == 7 and result["noise_effect"][1] == pytest.approx(expected, abs=0.02)
    with pytest.raises(ValueError, match="draws"):
        teacher_view_areas(Threshold(), images, 2, draws=0)


def test_teacher_view_leaves_the_network_untouched():
    network = SSL4MISUNet(in_channels=1, out_channels=4).eval()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    images = torch.rand(6, 1, 32, 32)
    first = teacher_view_areas(network, images, 4, batch_size=3)
    assert not network.training
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert teacher_view_areas(network, images, 4, batch_size=3) == first  # seeded noise and dropout
    assert sum(first["areas"]["teacher"]) == 6 * 32 * 32


def test_teacher_bias_command_on_phantom_slices(tmp_path):
    prepared = prepared_phantoms(tmp_path, "acdc")
    checkpoint = tmp_path / "model.pt"
    torch.save(SSL4MISUNet(in_channels=1, out_channels=4).state_dict(), checkpoint)
    out = tmp_path / "bias.json"
    args = ["teacher-bias", "--checkpoint", str(checkpoint), "--datalist", str(prepared / "datalists/lab3.json")]
    assert main(args + ["--size", "32", "--limit", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["inputs"]["slices"] == 8 and report["inputs"]["size"] == [32, 32]
    assert sum(report["reference"]) == sum(report["areas"]["eval"]) == 8 * 32 * 32
    assert report["class_names"]["1"] == "rv"


def test_teacher_bias_command_without_labels_in_the_slices(tmp_path):
    prepared = prepared_phantoms(tmp_path, "acdc")
    datalist = prepared / "datalists/lab3.json"
    for entry in json.loads(datalist.read_text())["unlabeled"][:4]:
        with h5py.File(prepared / entry["image"], "a") as handle:
            del handle["label"]
    checkpoint = tmp_path / "model.pt"
    torch.save(SSL4MISUNet(in_channels=1, out_channels=4).state_dict(), checkpoint)
    out = tmp_path / "bias.json"
    args = ["teacher-bias", "--checkpoint", str(checkpoint), "--datalist", str(datalist), "--size", "32"]
    assert main(args + ["--limit", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "reference" not in report and sum(report["areas"]["teacher"]) == 4 * 32 * 32
