"""scripts/import_checkpoint.py: the authors' AMSNet Lightning and AP-BSN/AM-BSN checkpoints become ours."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_reference, load_script, shared_path

from amcfd.archs import build_arch
from amcfd.engine.checkpoint import FORMAT, load_checkpoint
from amcfd.engine.inference import build_denoiser, load_network_weights
from amcfd.hub.importers import import_amsnet
from amcfd.methods.amsnet import amsnet_denoise
from amcfd.options import validate
from amcfd.registry import METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_checkpoint.py"


@pytest.fixture(scope="module")
def script():
    return load_script("import_checkpoint")


def test_imports_the_reference_lightning_checkpoint(script, tmp_path, capsys):
    src = shared_path("reference", "amsnet_lightning_ckpt.pt")
    ref = load_reference("amsnet_lightning_ckpt.pt")
    out_path = tmp_path / "amsnet.pth"
    assert script.main(["--from", "amsnet", str(src), str(out_path)]) == 0
    assert "wrote" in capsys.readouterr().out

    ckpt = load_checkpoint(out_path)
    assert ckpt["format"] == FORMAT and ckpt["iteration"] == 0 and ckpt["network_ema"] is None
    network = ckpt["opt"]["network"]
    expected = ref["config"]["net"]["init_args"]["net_param"]["net_param"]
    assert network == {"type": "Restormer", **expected}              # inferred from the weights' shapes
    assert ckpt["opt"]["method"] == {"type": "AMSNet", "pd_train": 5, "pd_test": 2, "r3": False}

    net = build_arch(network).eval()
    load_network_weights(net, ckpt, strict=True)
    method = METHODS.build(ckpt["opt"]["method"], net).eval()
    with torch.no_grad():
        assert (net(ref["input"]) - ref["output"]).abs().max() <= 1e-5
        out = amsnet_denoise(method.net, ref["input"], method.pd_test, masks=ref["eval_masks"])
    assert (out - ref["eval_forward_output"]).abs().max() <= 1e-5


def test_valid_py_builds_the_teacher_from_the_imported_file(script, tmp_path):
    src = shared_path("reference", "amsnet_lightning_ckpt.pt")
    ref = load_reference("amsnet_lightning_ckpt.pt")
    out_path = tmp_path / "amsnet.pth"
    assert script.main(["--from", "amsnet", str(src), str(out_path), "--r3"]) == 0
    opt = validate({"name": "imported", "device": "cpu", "path": {"pretrain_network": str(out_path)}}, "valid")
    method, denoise_fn = build_denoiser(opt)
    assert method.r3 and method.pd_test == 2
    torch.manual_seed(ref["r3_case"]["seed"])                           # the authors' random stream
    out = method.denoise(ref["r3_case"]["input"])
    assert (out - ref["r3_case"]["output"]).abs().max() <= 1e-5
    assert denoise_fn(ref["input"]).shape == ref["input"].shape


@pytest.mark.parametrize("name,arch", [("amsnet_unet.pt", "UNet"), ("amsnet_dncnn.pt", "DnCNN"),
                                       ("amsnet_nafnetbase.pt", "NAFNetBase"), ("amsnet_restormer.pt", "Restormer")])
def test_other_denoisers_are_recognised_from_their_weights(script, tmp_path, name, arch):
    ref = load_reference(name)
    lightning = {"state_dict": {f"net.dn.branches.0.{k}": v for k, v in ref["state_dict"].items()},
                 "epoch": 3, "global_step": 10}
    torch.save(lightning, tmp_path / "in.ckpt")
    out = import_amsnet(tmp_path / "in.ckpt", tmp_path / "out.pth")
    network = out["opt"]["network"]
    assert network["type"] == arch and out["imported_from"]["epoch"] == 3
    net = build_arch(network).eval()
    load_network_weights(net, out, strict=True)
    with torch.no_grad():
        assert (net(ref["input"]) - ref["output"]).abs().max() <= 1e-5


def test_network_yaml_and_bad_inputs(script, tmp_path, capsys):
    ref = load_reference("amsnet_lightning_ckpt.pt")
    src = tmp_path / "in.ckpt"
    torch.save({"state_dict": ref["state_dict"]}, src)
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("network: {type: Restormer, preset: small}\n")
    assert script.main(["--from", "amsnet", str(src), str(tmp_path / "o.pth"), "--network-yaml", str(wrong)]) == 2
    assert "does not fit the weights" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()
    assert script.main(["--from", "amsnet", str(tmp_path / "missing.ckpt"), str(tmp_path / "o.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    torch.save({"state_dict": {"net.dn.branches.0.foo.weight": torch.zeros(1)}}, src)
    assert script.main(["--from", "amsnet", str(src), str(tmp_path / "o.pth")]) == 2
    assert "cannot tell the network" in capsys.readouterr().err


@pytest.mark.parametrize("name, arch, method", [("apbsn_apbsn.pt", "DBSNl", "APBSN"),
                                                ("ambsn_bsn.pt", "AMBSN", "AMBSN")])
def test_apbsn_trainer_checkpoints_denoise_through_valid_py_as_the_authors(script, tmp_path, name, arch, method):
    """AP-BSN's container {'epoch', 'model_weight': {'denoiser': bsn.*}} -> ours; valid.py's denoiser then
    reproduces the authors' no-R^3 output (their 0-255 scale; tolerance of the reference README)."""
    ref = load_reference(name)
    src = tmp_path / "authors.pth"
    torch.save({"epoch": 20, "model_weight": {"denoiser": ref["state_dict"]}, "optimizer_weight": {}}, src)
    assert script.main(["--from", "apbsn", str(src), str(tmp_path / "ours.pth")]) == 0
    ours = load_checkpoint(tmp_path / "ours.pth")
    assert ours["opt"]["network"]["type"] == arch and ours["opt"]["method"] == {"type": method, "r3": True}
    opt = validate({"name": "imported", "device": "cpu", "method": {"r3": False},
                    "path": {"pretrain_network": str(tmp_path / "ours.pth")}}, "valid")
    built, denoise = build_denoiser(opt)
    assert type(built).__name__ == method
    x = ref["input"]                                                    # (1, 3, 64, 64) in 0-255
    out = denoise(x / 255) * 255                                        # denoise_fn clamps to [0, 1]
    expect = ref["output"].clamp(0, 255)
    assert (out - expect).abs().max() < 1e-4


def test_apbsn_import_rejects_other_weights(script, tmp_path, capsys):
    src = tmp_path / "other.pth"
    torch.save({"model_weight": {"denoiser": {"bsn.conv.weight": torch.zeros(1)}}}, src)
    assert script.main(["--from", "apbsn", str(src), str(tmp_path / "out.pth")]) == 2
    assert "not an AP-BSN/AM-BSN network" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


def _denoise_imported(script, tmp_path, kind: str, released) -> tuple:
    """Write ``released`` as the authors' file, import it, build valid.py's denoiser from the result."""
    src = tmp_path / "released.pth"
    torch.save(released, src)
    assert script.main(["--from", kind, str(src), str(tmp_path / "ours.pth")]) == 0
    ours = load_checkpoint(tmp_path / "ours.pth")
    assert ours["opt"]["method"] == {"type": "SinglePass"}
    opt = validate({"name": "imported", "device": "cpu", "path": {"pretrain_network": str(tmp_path / "ours.pth")}},
                   "valid")
    method, denoise = build_denoiser(opt)
    assert type(method).__name__ == "SinglePass"
    return ours["opt"]["network"], denoise


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"model_state_dict": sd},
                                  lambda sd: {f"module.{k}": v for k, v in sd.items()}])
def test_nbsn_weights_of_aprrd_and_tmbsn_denoise_through_valid_py_as_the_authors(script, tmp_path, wrap):
    """APR-RD's {'model_state_dict': sd} and TM-BSN's plain NBSN_SIDD.pth; their range is ours, [0, 1]."""
    ref = load_reference("aprrd_nbsn102.pt")
    network, denoise = _denoise_imported(script, tmp_path, "nbsn", wrap(ref["state_dict"]))
    assert network == {"type": "NBSN", "in_nc": 3, "out_nc": 3, "mid_channels": 48}
    assert (denoise(ref["input"]) - ref["output"].clamp(0, 1)).abs().max() <= 3e-5   # README tolerance


def _double_net(sd: dict) -> dict:
    """AT-BSN-D's saved DoubleNet: the student under nbsn., the frozen teacher under bsn. (one key is enough)."""
    return {**{f"nbsn.{k}": v for k, v in sd.items()}, "bsn.nin_C.bias": torch.zeros(3)}


@pytest.mark.parametrize("wrap", [lambda sd: {f"module.{k}": v for k, v in sd.items()}, _double_net])
def test_atbsn_student_denoises_through_valid_py_as_the_authors(script, tmp_path, wrap):
    """AT-BSN's N_BSN (plain, or inside an AT-BSN-D DoubleNet) sees [0, 255]: value_range 255 in the config."""
    ref = load_reference("atbsn_nbsn.pt")
    network, denoise = _denoise_imported(script, tmp_path, "atbsn", wrap(ref["state_dict"]))
    assert network["type"] == "ATBSNStudent" and network["value_range"] == 255
    assert network["mid_channels"] == ref["config"]["mid_channels"]
    out = denoise(ref["input"] / 255) * 255                             # denoise_fn clamps to [0, 1]
    assert (out - ref["output"].clamp(0, 255)).abs().max() <= 6e-3      # README tolerance (0-255 scale)


def test_atbsn_teacher_imports_with_the_validation_hole_size(script, tmp_path, capsys):
    ref = load_reference("atbsn_atbsn.pt")
    network, denoise = _denoise_imported(script, tmp_path, "atbsn", ref["state_dict"])
    assert network["type"] == "ATBSN" and network["hole_size"] == ref["valid_hole_size"] == 3
    out = denoise(ref["input"] / 255) * 255
    assert (out - ref["outputs_by_hole_size"]["3"].clamp(0, 255)).abs().max() <= 5e-3
    torch.save(ref["state_dict"], tmp_path / "atbsn.pth")
    assert script.main(["--from", "nbsn", str(tmp_path / "atbsn.pth"), str(tmp_path / "x.pth")]) == 2
    assert "not an APR-RD/TM-BSN NBSN" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def _lightning(sd: dict) -> dict:
    return {"state_dict": {f"net.dn.branches.0.{k}": v for k, v in sd.items()}, "epoch": 1}


def _apbsn_trainer(sd: dict) -> dict:
    return {"epoch": 20, "model_weight": {"denoiser": sd}, "optimizer_weight": {}}


def _plain(sd: dict) -> dict:
    return sd


AMBIGUOUS = None


@pytest.mark.parametrize("name, save_as, expected", [
    ("amsnet_restormer.pt", _lightning, ("amsnet", 1)),
    ("amsnet_unet.pt", _lightning, ("amsnet", 1)),
    ("amsnet_dncnn.pt", _lightning, ("amsnet", 1)),
    ("amsnet_nafnetbase.pt", _lightning, ("amsnet", 1)),
    ("amsnet_deamnet.pt", _lightning, ("amsnet", 1)),
    ("apbsn_dbsnl.pt", _apbsn_trainer, ("apbsn", 255)),
    ("apbsn_apbsn.pt", _apbsn_trainer, ("apbsn", 255)),
    ("ambsn_bsn.pt", _apbsn_trainer, ("apbsn", 255)),
    ("ambsn_ambsn.pt", _apbsn_trainer, ("apbsn", 255)),
    ("aprrd_nbsn102.pt", lambda sd: {"model_state_dict": sd}, ("nbsn", 1)),       # APR-RD's NBSN_1.02M
    ("aprrd_nbsn102.pt", _plain, ("nbsn", 1)),                                      # TM-BSN's NBSN_SIDD.pth
    ("atbsn_nbsn.pt", _double_net, ("atbsn", 255)),                                 # AT-BSN-D's DoubleNet
    ("atbsn_nbsn.pt", lambda sd: {f"module.{k}": v for k, v in sd.items()}, AMBIGUOUS),   # N_BSN: 255 or 1?
    ("atbsn_atbsn.pt", _plain, AMBIGUOUS),                                          # AT-BSN's teacher
    ("aprrd_atbsn_T.pt", _plain, AMBIGUOUS),                                        # APR-RD's AT-BSN teacher
])
def test_the_layout_is_detected_from_the_keys_or_refused_when_ambiguous(name, save_as, expected):
    from amcfd.hub.importers import detect_layout
    from amcfd.registry import ConfigError

    saved = save_as(load_reference(name)["state_dict"])
    if expected is AMBIGUOUS:
        with pytest.raises(ConfigError) as err:
            detect_layout(saved, name)
        message = str(err.value)
        assert "\n" not in message and "ambiguous" in message
        assert "--input-range 255" in message and "--input-range 1" in message and "--from" in message
    else:
        assert detect_layout(saved, name) == expected


def test_the_reference_lightning_file_is_detected_as_amsnet():
    from amcfd.hub.importers import detect_layout, read_checkpoint

    assert detect_layout(read_checkpoint(shared_path("reference", "amsnet_lightning_ckpt.pt")))[0] == "amsnet"


def test_without_from_the_script_imports_a_detected_layout_and_refuses_an_ambiguous_one(script, tmp_path, capsys):
    ref = load_reference("aprrd_nbsn102.pt")
    torch.save(ref["state_dict"], tmp_path / "NBSN_SIDD.pth")
    assert script.main([str(tmp_path / "NBSN_SIDD.pth"), str(tmp_path / "ours.pth")]) == 0
    assert load_checkpoint(tmp_path / "ours.pth")["opt"]["network"]["type"] == "NBSN"

    student = load_reference("atbsn_nbsn.pt")
    torch.save(student["state_dict"], tmp_path / "n_bsn.pth")
    assert script.main([str(tmp_path / "n_bsn.pth"), str(tmp_path / "guess.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ambiguous" in err and not (tmp_path / "guess.pth").exists()
    for input_range in (255, 1):              # told which: the network sees what it was told
        out = tmp_path / f"range{input_range}.pth"
        assert script.main(["--from", "atbsn", "--input-range", str(input_range), str(tmp_path / "n_bsn.pth"),
                            str(out)]) == 0
        network = load_checkpoint(out)["opt"]["network"]
        assert network["type"] == "ATBSNStudent" and network.get("value_range", 1) == input_range
    assert script.main(["--from", "nbsn", "--input-range", "255", str(tmp_path / "NBSN_SIDD.pth"),
                        str(tmp_path / "x.pth")]) == 2
    assert "input range 255" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
