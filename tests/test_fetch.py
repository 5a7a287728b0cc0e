"""``fetch-weights`` against a local HTTP server on 127.0.0.1: good, corrupted and truncated files (issue 12/13).

A good file is verified (git blob id, as ``git hash-object`` computes it, or sha256), written atomically and, for
SS-Net, converted into ``models/model.pt``; a corrupted or truncated one is refused with a message naming the URL
and the problem, and nothing is written (no target, no partial file, an existing ``model.pt`` untouched).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from semizoo import usage
from semizoo.fetch import WeightsError, fetch_weights, file_hash
from test_networks import _official_state_dict

REPO = Path(__file__).resolve().parents[1]


class _Files(BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; ``/truncated/...`` announces the whole file but sends half, then closes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path.removeprefix("/truncated"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path.startswith("/truncated") else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> bytes:
    """An SS-Net ACDC checkpoint under the official key names (tests/data/official_keys)."""
    path = tmp_path_factory.mktemp("official") / "unet_best_model.pth"
    torch.save(_official_state_dict("ssnet_acdc"), path)
    return path.read_bytes()


def _git_blob_id(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "blob"
    path.write_bytes(data)
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def _bundle(tmp_path: Path, server, name: str, hash_val: str, hash_type: str = "git-blob-sha1") -> Path:
    """A scratch ssnet_acdc_segmentation whose large_files.yml points at ``server`` (lab3 from ``name``)."""
    root = tmp_path / "ssnet_acdc_segmentation"
    shutil.copytree(REPO / "bundles" / "ssnet_acdc_segmentation", root, ignore=shutil.ignore_patterns("*.pt*"))
    target = "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth"
    listing = {
        "large_files": [
            {"path": target, "url": f"http://127.0.0.1:{server.server_port}{name}", "hash_val": hash_val}
            | {"hash_type": hash_type}
        ],
        "official_checkpoints": {"lab3": target},
    }
    (root / "large_files.yml").write_text(yaml.safe_dump(listing))
    return root


def _written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "models").rglob("*") if p.is_file())


def test_good_file_is_verified_converted_and_kept(server, official, tmp_path):
    server.files["/good.pth"] = official
    root = _bundle(tmp_path, server, "/good.pth", _git_blob_id(official, tmp_path))
    lines = fetch_weights(root)
    assert lines == [
        "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth: downloaded, git-blob-sha1 verified",
        "models/model.pt: converted from models/official/ACDC_SSNet_3_labeled_unet_best_model.pth (setting lab3)",
    ]
    assert (root / "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth").read_bytes() == official
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    source = _official_state_dict("ssnet_acdc")
    # the official output convolution is the backbone's head (semizoo/networks/official.py's table)
    assert torch.equal(state["backbone.head.weight"], source["decoder.out_conv.weight"])
    assert torch.equal(state["heads.projection.0.weight"], source["projection_head.0.weight"])
    requests = len(server.requests)
    assert fetch_weights(root)[0].endswith(": present, git-blob-sha1 verified")
    assert len(server.requests) == requests  # a verified file is not downloaded again


def test_fetch_weights_command_downloads_verifies_and_converts(server, official, tmp_path):
    """The "Use it" command (semizoo.usage.fetch_weights) end to end through the CLI."""
    server.files["/cli.pth"] = official
    root = _bundle(tmp_path, server, "/cli.pth", _git_blob_id(official, tmp_path))
    command = usage.fetch_weights(root, python=sys.executable)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth: downloaded, git-blob-sha1 verified",
        "models/model.pt: converted from models/official/ACDC_SSNet_3_labeled_unet_best_model.pth (setting lab3)",
    ]
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert torch.equal(state["backbone.head.weight"], _official_state_dict("ssnet_acdc")["decoder.out_conv.weight"])


@pytest.mark.parametrize(
    "served,expected",
    [
        ("/corrupt.pth", r"git-blob-sha1 [0-9a-f]{40} != expected [0-9a-f]{40} \(corrupted or wrong file"),
        ("/truncated/good.pth", r"truncated download \(\d+ of \d+ bytes\); nothing written"),
        ("/missing.pth", r"download failed \(HTTP Error 404"),
    ],
)
def test_corrupted_truncated_or_missing_downloads_are_refused_and_nothing_is_written(
    server, official, tmp_path, served, expected
):
    server.files["/good.pth"] = official
    server.files["/corrupt.pth"] = official[:-10] + bytes(10)
    root = _bundle(tmp_path, server, served, _git_blob_id(official, tmp_path))
    (root / "models" / "model.pt").write_bytes(b"the user's own model")
    with pytest.raises(WeightsError, match=expected) as raised:
        fetch_weights(root)
    assert f"http://127.0.0.1:{server.server_port}{served}: " in str(raised.value)
    assert _written(root) == ["models/.gitkeep", "models/model.pt"]  # no target, no partial file
    assert (root / "models" / "model.pt").read_bytes() == b"the user's own model"


def test_sha256_entries_work_with_fetch_weights_and_monai_download_large_files(server, official, tmp_path):
    server.files["/good.pth"] = official
    sha256 = hashlib.sha256(official).hexdigest()
    root = _bundle(tmp_path / "ours", server, "/good.pth", sha256, "sha256")
    assert fetch_weights(root)[0].endswith(": downloaded, sha256 verified")
    assert file_hash(root / "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth", "sha256") == sha256
    monai = _bundle(tmp_path / "monai", server, "/good.pth", sha256, "sha256")
    listing = yaml.safe_load((monai / "large_files.yml").read_text())
    (monai / "large_files.yml").write_text(yaml.safe_dump({"large_files": listing["large_files"]}))
    command = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(monai)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (monai / "models/official/ACDC_SSNet_3_labeled_unet_best_model.pth").read_bytes() == official


def test_listing_errors_and_bundles_without_weights(tmp_path):
    with pytest.raises(WeightsError, match="meanteacher_acdc_segmentation: publishes no weights"):
        fetch_weights("meanteacher_acdc_segmentation")
    root = tmp_path / "b"
    (root / "configs").mkdir(parents=True)
    (root / "large_files.yml").write_text(
        yaml.safe_dump({"large_files": [{"path": "../x.pt", "url": "http://h/x", "hash_val": "0", "hash_type": "md5"}]})
    )
    with pytest.raises(WeightsError, match=r"\.\./x\.pt lies outside the bundle"):
        fetch_weights(root)
    (root / "large_files.yml").write_text(yaml.safe_dump({"large_files": [{"path": "models/x.pt", "url": "u"}]}))
    with pytest.raises(WeightsError, match=r"lacks \['hash_val', 'hash_type'\]"):
        fetch_weights(root)


def test_released_listings_are_well_formed():
    """The SS-Net bundles list the four official checkpoints with the blob ids of the authors' tree."""
    from semizoo.fetch import read_large_files

    expected = {
        "ssnet_acdc_segmentation": {
            "lab3": "d9537d4c5372639d9ce0c554cc3a1505dfacacea",
            "lab7": "bed3da7b4219a5445999cee1c9c6d36363aa08e6",
        },
        "ssnet_la_segmentation": {
            "lab4": "539eeced764eef04dbbc35e6a9963e0cff2bdd64",
            "lab8": "ebd7e19f1c77013958679a0ffa0ca02c23a739df",
        },
    }
    for bundle, blobs in expected.items():
        _, entries, official = read_large_files(bundle)
        by_path = {entry["path"]: entry for entry in entries}
        assert {setting: by_path[path]["hash_val"] for setting, path in official.items()} == blobs
        assert all(e["url"].startswith("https://github.com/ycwu1997/SS-Net/raw/main/pretrained_pth/") for e in entries)


def test_cli_reports_a_refused_download(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "semizoo", "fetch-weights", "epl_busi_segmentation"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: epl_busi_segmentation: publishes no weights (no large_files.yml)")
