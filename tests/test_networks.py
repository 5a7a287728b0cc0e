from pathlib import Path

import pytest
import torch
from semizoo.networks import SSL4MISUNet, UAMTVNet, load_official_weights

KEYS = Path(__file__).parent / "data" / "official_keys"


def _official_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official key names and shapes (facts listed in tests/data/official_keys)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        else:
            state[key] = torch.randn(dims, generator=generator)
    return state


def test_unet_shapes_and_features():
    net = SSL4MISUNet(1, 4).eval()
    x = torch.randn(2, 1, 64, 48)
    assert net(x).shape == (2, 4, 64, 48)
    feats = net(x, features=True)
    assert feats["logits"].shape == (2, 4, 64, 48)
    assert feats["embedding"].shape == (2, 16, 64, 48)
    assert feats["latent"].shape == (2, 256, 4, 3)
    assert [p.shape[1] for p in feats["pyramid"]] == [256, 128, 64, 32, 16]
    assert sum(p.shape[1] for p in feats["pyramid"]) == 496
    assert torch.equal(feats["pyramid"][-1], feats["embedding"])
    assert torch.allclose(net.head(feats["embedding"]), feats["logits"])
    assert sum(p.numel() for p in net.parameters()) == 1_813_764  # the official UNet(1, 4) count


def test_vnet_shapes_features_and_dropout_position():
    torch.manual_seed(0)
    net = UAMTVNet(1, 2).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    feats = net(x, features=True)
    assert feats["logits"].shape == (1, 2, 32, 32, 16)
    assert feats["latent"].shape == (1, 128, 4, 4, 2)
    assert sum(p.shape[1] for p in feats["pyramid"]) == 256
    assert torch.equal(feats["embedding"], feats["pyramid"][4])  # eval: dropout is identity
    net.train()
    feats = net(x, features=True)
    dropped = feats["embedding"].abs().sum(dim=(2, 3, 4)) == 0
    kept = feats["pyramid"][4].abs().sum(dim=(2, 3, 4)) == 0
    assert dropped.sum() > kept.sum()  # Dropout3d zeroes whole channels after x9
    assert sum(p.numel() for p in net.parameters()) == 9_448_866  # the official VNet count


def test_networks_reject_indivisible_shapes():
    with pytest.raises(ValueError, match=r"divisible by 16, got \[1, 1, 30, 32, 16\]"):
        UAMTVNet()(torch.randn(1, 1, 30, 32, 16))
    with pytest.raises(ValueError, match="divisible by 16"):
        SSL4MISUNet()(torch.randn(1, 1, 40, 32))


@pytest.mark.parametrize(
    "net, x",
    [(SSL4MISUNet(1, 4), torch.randn(1, 1, 32, 32)), (UAMTVNet(1, 2), torch.randn(1, 1, 16, 16, 16))],
    ids=["unet", "vnet"],
)
def test_torchscript_keeps_logits_and_features(net, x, tmp_path):
    net.eval()
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, str(tmp_path / "net.ts"))
    loaded = torch.jit.load(str(tmp_path / "net.ts"))
    assert torch.allclose(loaded(x), net(x), atol=1e-5)
    assert torch.allclose(loaded(x, True)["logits"], net(x), atol=1e-5)


def _assert_loaded_in_creation_order(model: torch.nn.Module, official: dict, skip_prefixes=()):
    """The i-th official tensor (module creation order) must sit in the i-th model tensor."""
    official_values = [v for k, v in official.items() if not k.startswith(skip_prefixes)]
    ours = list(model.state_dict().values())
    assert len(ours) == len(official_values)
    for mine, theirs in zip(ours, official_values):
        assert torch.equal(mine, theirs.to(mine.dtype))


@pytest.mark.parametrize(
    "name, factory, skip",
    [
        ("ua_mt_vnet", lambda: UAMTVNet(1, 2), ()),
        ("ssl4mis_unet", lambda: SSL4MISUNet(1, 4), ()),
        ("ssnet_la", lambda: UAMTVNet(1, 2), ("projection_head", "prediction_head", "contrastive")),
        ("ssnet_acdc", lambda: SSL4MISUNet(1, 4), ("projection_head", "prediction_head", "contrastive")),
    ],
)
def test_load_official_weights(name, factory, skip, tmp_path):
    official = _official_state_dict(name)
    path = tmp_path / "best.pth"
    torch.save({f"module.{k}": v for k, v in official.items()}, path)  # DataParallel prefix tolerated
    model = load_official_weights(factory(), path)
    _assert_loaded_in_creation_order(model, official, skip)


def test_load_official_weights_into_a_backbone_with_heads():
    class WithHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = SSL4MISUNet(1, 4)
            self.heads = torch.nn.Module()
            self.heads.projection = torch.nn.Sequential(
                torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 32)
            )
            self.heads.prediction = torch.nn.Sequential(
                torch.nn.Linear(32, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 32)
            )

            def selector():
                return torch.nn.Sequential(
                    torch.nn.Linear(32, 32), torch.nn.BatchNorm1d(32), torch.nn.LeakyReLU(0.2), torch.nn.Linear(32, 1)
                )

            self.heads.selector = torch.nn.ModuleList([selector() for _ in range(4)])
            self.heads.memory_selector = torch.nn.ModuleList([selector() for _ in range(4)])

    official = _official_state_dict("ssnet_acdc", seed=3)
    model = load_official_weights(WithHeads(), official)
    _assert_loaded_in_creation_order(model, official)


def test_load_official_weights_errors_list_keys():
    official = _official_state_dict("ssl4mis_unet")
    broken = dict(official)
    broken.pop("decoder.out_conv.weight")
    broken["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['head.weight'\]; unexpected \['decoder.extra.weight'\]"):
        load_official_weights(SSL4MISUNet(1, 4), broken)
    with pytest.raises(ValueError, match="shape mismatches.*head.weight"):
        load_official_weights(SSL4MISUNet(1, 2), official)
    with pytest.raises(ValueError, match="unexpected"):  # a 3D checkpoint into the 2D network
        load_official_weights(SSL4MISUNet(1, 4), _official_state_dict("ua_mt_vnet"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_weights(SSL4MISUNet(1, 4), "/nonexistent/best.pth")


def test_old_checkpoints_without_batch_counters_load():
    official = {k: v for k, v in _official_state_dict("ua_mt_vnet").items() if "num_batches_tracked" not in k}
    model = load_official_weights(UAMTVNet(1, 2), official)
    assert torch.equal(model.head.weight, official["out_conv.weight"])


@pytest.mark.parametrize(
    "bundle, keys", [("ssnet_acdc_segmentation", "ssnet_acdc"), ("ssnet_la_segmentation", "ssnet_la")]
)
def test_convert_official_checkpoint_into_an_ssnet_bundle(bundle, keys, tmp_path):
    from semizoo.cli import main
    from semizoo.networks import SSNetNetwork

    official = _official_state_dict(keys, seed=2)
    torch.save(official, tmp_path / "best.pth")
    assert (
        main(["convert-official", str(tmp_path / "best.pth"), "--bundle", bundle, "--out", str(tmp_path / "m.pt")]) == 0
    )
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    backbone = SSL4MISUNet(1, 4) if "acdc" in bundle else UAMTVNet(1, 2)
    network = SSNetNetwork(backbone, 4 if "acdc" in bundle else 2)
    network.load_state_dict(state)
    _assert_loaded_in_creation_order(network, official)
