"""Released weights by name (amcfd/hub/weights.py, amcfd-weights): a local mirror serves an authors' file in the
reference layout; download, checksum, import, cache, the one-line errors; .safetensors checkpoints."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch
from conftest import load_reference

from amcfd.archs import build_arch
from amcfd.engine.checkpoint import load_checkpoint, save_safetensors
from amcfd.engine.inference import build_denoiser
from amcfd.hub import cli, weights
from amcfd.hub.weights import Release, load_registry
from amcfd.options import validate
from amcfd.registry import ConfigError

SOURCE, PATH = "someone/NBSN-repo", "ckpt/NBSN_SIDD.pth"


@pytest.fixture
def released(request, tmp_path):
    """An NBSN saved as TM-BSN saves it (a plain state_dict), under mirror/owner/repo/path, with an input and the
    network's output on it: a tiny one the test makes itself (download, checksum and cache need nothing more),
    or, with the parameter "authors", APR-RD's reference weights and output (../shared/reference)."""
    if getattr(request, "param", None) == "authors":
        ref = load_reference("aprrd_nbsn102.pt")
    else:
        torch.manual_seed(0)
        net = build_arch({"type": "NBSN", "mid_channels": 8}).eval()
        x = torch.rand(1, 3, 24, 24)
        with torch.no_grad():
            ref = {"state_dict": net.state_dict(), "input": x, "output": net(x)}
    file = tmp_path / "mirror" / SOURCE / PATH
    file.parent.mkdir(parents=True)
    torch.save(ref["state_dict"], file)
    return ref, file


@pytest.fixture
def hub(tmp_path, monkeypatch, released):
    """A registry of one release whose file is in the mirror folder; the cache in tmp_path."""
    _, file = released
    data = file.read_bytes()
    release = Release(name="ref-nbsn", source=SOURCE, commit="0" * 40, path=PATH,
                      sha256=hashlib.sha256(data).hexdigest(), size=len(data), importer="nbsn", input_range=1,
                      model="NBSN", licence="test", reported="none")
    monkeypatch.setattr(weights, "releases", lambda: {release.name: release})
    monkeypatch.setenv("AMCFD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AMCFD_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.chdir(tmp_path)
    return release


def denoise_with(pretrain_network):
    opt = validate({"name": "hub", "device": "cpu", "path": {"pretrain_network": pretrain_network}}, "valid")
    return build_denoiser(opt)[1], opt


@pytest.mark.parametrize("released", ["authors"], indirect=True)
def test_a_name_downloads_checks_imports_and_denoises_as_the_authors(hub, released):
    ref, _ = released
    assert not hub.cached.exists()
    denoise, opt = denoise_with("ref-nbsn")                    # path.pretrain_network: NAME
    assert opt["path"]["pretrain_network"] == str(hub.cached) and hub.cached.is_file()   # resolved by validate
    assert (denoise(ref["input"]) - ref["output"].clamp(0, 1)).abs().max() <= 3e-5    # reference README tolerance
    assert load_checkpoint(hub.cached)["opt"]["network"]["type"] == "NBSN"
    assert [p.name for p in hub.cached.parent.iterdir()] == [hub.cached.name]          # the download is gone


def test_the_second_call_uses_the_cache_without_the_network(hub, released, monkeypatch):
    first = weights.fetch("ref-nbsn")
    stamp = first.stat().st_mtime_ns
    released[1].unlink()
    monkeypatch.setenv("AMCFD_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    assert weights.fetch("ref-nbsn") == first and first.stat().st_mtime_ns == stamp


def test_a_path_still_wins_over_a_name(hub, tmp_path, released):
    (tmp_path / "ref-nbsn").write_bytes(b"")
    assert weights.resolve_checkpoint("ref-nbsn") == "ref-nbsn" and not hub.cached.exists()
    assert weights.resolve_checkpoint("other.pth") == "other.pth"


def test_a_corrupted_file_is_a_checksum_error_and_is_deleted(hub, released):
    _, file = released
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF                                # same size, one byte changed
    file.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        weights.fetch("ref-nbsn")
    message = str(err.value)
    assert "\n" not in message and "does not match the registry" in message and "deleted" in message
    assert not hub.cached.exists() and list(hub.cached.parent.iterdir()) == []


def test_without_mirror_or_network_the_error_is_one_line_with_the_url_and_the_command(hub, released, monkeypatch):
    with socket.socket() as s:                                  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("AMCFD_WEIGHTS_MIRROR")
    monkeypatch.setattr(weights, "SOURCE_URL", f"http://127.0.0.1:{port}/{{source}}/raw/{{commit}}/{{path}}")
    with pytest.raises(ConfigError) as err:
        denoise_with("ref-nbsn")
    message = str(err.value)
    assert "\n" not in message and f"http://127.0.0.1:{port}/{SOURCE}/raw/{'0' * 40}/{PATH}" in message
    assert "amcfd-weights add ref-nbsn FILE" in message and not hub.cached.exists()

    hand = released[1]                                          # the file downloaded by hand
    assert cli.main(["add", "ref-nbsn", str(hand)]) == 0
    assert hub.cached.is_file() and hand.is_file()


def test_a_mirror_url_is_read_over_http(hub, released, monkeypatch, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AMCFD_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
        assert weights.fetch("ref-nbsn") == hub.cached and hub.cached.is_file()
    finally:
        server.shutdown()
        server.server_close()


def test_add_refuses_a_file_that_does_not_match_and_leaves_it(hub, tmp_path, capsys):
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, other)
    assert cli.main(["add", "ref-nbsn", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match the registry" in err
    assert other.is_file() and not hub.cached.exists()


def test_unknown_names_are_one_line_errors(hub, capsys):
    assert cli.main(["get", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown released weights 'nope'" in err and "ref-nbsn" in err


def test_list_prints_the_registry_and_what_is_cached(hub, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "| ref-nbsn | someone/NBSN-repo/ckpt/NBSN_SIDD.pth |" in out and out.rstrip().endswith("| no |")
    weights.fetch("ref-nbsn")
    assert cli.main(["list"]) == 0 and capsys.readouterr().out.rstrip().endswith("| yes |")


def test_the_packaged_registry_names_the_released_students():
    from amcfd.hub.importers import INPUT_RANGES

    known = weights.releases()
    assert {"tmbsn-sidd", "tmbsn-dnd", "aprrd-nbsn102-sidd", "aprrd-nbsn100-sidd"} <= set(known)
    for rel in known.values():
        assert len(rel.sha256) == 64 and len(rel.commit) == 40 and rel.size > 0 and rel.licence
        assert rel.input_range in INPUT_RANGES[rel.importer]
    assert known["aprrd-nbsn100-sidd"].importer == "atbsn" and known["aprrd-nbsn100-sidd"].input_range == 1


def test_a_registry_entry_without_its_checksum_is_refused(tmp_path):
    (tmp_path / "r.yml").write_text("x:\n  source: a/b\n  path: p.pth\n  importer: nbsn\n  input_range: 1\n")
    with pytest.raises(ConfigError, match="release 'x' needs exactly the keys"):
        load_registry(tmp_path / "r.yml")


def test_denoise_pretrained_takes_a_name(hub, released, tmp_path):
    import cv2
    import numpy as np

    from amcfd.denoise import run

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.random.default_rng(0).integers(0, 256, (24, 28, 3), dtype=np.uint8))
    run([str(photos), "--output", str(tmp_path / "by_name"), "--pretrained", "ref-nbsn", "--device", "cpu"])
    run([str(photos), "--output", str(tmp_path / "by_path"), "--pretrained", str(hub.cached), "--device", "cpu"])
    assert (tmp_path / "by_name" / "a.png").read_bytes() == (tmp_path / "by_path" / "a.png").read_bytes()


@pytest.mark.parametrize("with_ema", [False, True])
def test_a_safetensors_export_denoises_bit_for_bit_as_the_checkpoint(hub, tmp_path, with_ema, released):
    ckpt = load_checkpoint(weights.fetch("ref-nbsn"))
    if with_ema:
        ckpt["network_ema"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["network"].items()}
    torch.save(ckpt, tmp_path / "ours.pth")
    save_safetensors(ckpt, tmp_path / "ours.safetensors")
    data = (tmp_path / "ours.safetensors").read_bytes()          # 8-byte header length, JSON header, raw tensors
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert not data.startswith((b"PK", b"\x80"))                      # neither torch's zip nor a pickle
    assert all(set(v) == {"dtype", "shape", "data_offsets"} for k, v in header.items() if k != "__metadata__")
    back = load_checkpoint(tmp_path / "ours.safetensors")
    assert back["opt"] == ckpt["opt"]
    assert back["imported_from"] == {**ckpt["imported_from"], "path": Path(ckpt["imported_from"]["path"]).name}
    assert (back["network_ema"] is None) == (not with_ema)
    x = released[0]["input"]
    a, _ = denoise_with(str(tmp_path / "ours.pth"))
    b, _ = denoise_with(str(tmp_path / "ours.safetensors"))
    assert torch.equal(a(x), b(x))


def test_export_command_writes_safetensors_and_keeps_an_existing_file(hub, tmp_path, capsys):
    weights.fetch("ref-nbsn")
    assert cli.main(["export", "ref-nbsn", str(tmp_path / "m.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "m.safetensors")["opt"]["network"]["type"] == "NBSN"
    before = (tmp_path / "m.safetensors").read_bytes()
    assert cli.main(["export", "ref-nbsn", str(tmp_path / "m.safetensors")]) == 2
    assert (tmp_path / "m.safetensors").read_bytes() == before
    assert cli.main(["export", "ref-nbsn", str(tmp_path / "m.pth")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_a_name_works_as_a_frozen_teacher(hub):
    from amcfd.engine.teacher import FrozenTeacher

    opt = validate({"name": "t", "device": "cpu", "network": {"type": "DnCNN"},
                    "method": {"type": "DistillCoarse", "teacher": {"checkpoint": "ref-nbsn"}},
                    "datasets": {"train": {"type": "SyntheticCameraNoise", "images": ["astronaut"]}}}, "train")
    teacher = FrozenTeacher(**opt["method"]["teacher"])                  # the name was resolved by validate
    assert teacher.checkpoint == hub.cached and type(teacher.method).__name__ == "SinglePass"
