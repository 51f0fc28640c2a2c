"""Option files: bases, overrides, validation errors (one line, exit code 2), registry errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amcfd.options import CONFIG_DIR, apply_overrides, find_option_file, load_options, parse_scalar, validate
from amcfd.registry import ARCHS, ConfigError, Registry

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**extra) -> dict:
    return {"name": "x", "network": {"type": "DnCNN", "in_nc": 3, "out_nc": 3},
            "datasets": {"train": {"type": "SyntheticCameraNoise"}}, **extra}


def test_base_files_merge_recursively_and_type_change_replaces_section(tmp_path):
    write(tmp_path / "base.yml", minimal(train={"lr": 1e-3, "total_iter": 50}))
    write(tmp_path / "child.yml", {"base": "base.yml", "train": {"total_iter": 7},
                                   "network": {"type": "UNet", "n_feature": 16}})
    opt = load_options(tmp_path / "child.yml", phase="train")
    assert opt["train"]["lr"] == 1e-3 and opt["train"]["total_iter"] == 7
    assert opt["network"] == {"type": "UNet", "n_feature": 16}


def test_overrides_are_yaml_scalars_and_create_keys():
    assert parse_scalar("1e-4") == 1e-4 and isinstance(parse_scalar("1e-4"), float)
    assert parse_scalar("true") is True and parse_scalar("[1, 2]") == [1, 2] and parse_scalar("abc") == "abc"
    assert parse_scalar("__import__('os')") == "__import__('os')"  # never evaluated
    opt = apply_overrides(minimal(), ["train.lr=2e-4", "network.type=UNet", "network.n_feature=8"])
    assert opt["train"]["lr"] == 2e-4
    assert opt["network"] == {"type": "UNet", "n_feature": 8}  # switching type resets the section


@pytest.mark.parametrize("change, message", [
    ({"trian": {}}, "unknown option 'trian' (did you mean 'train'?)"),
    ({"train": {"total_itr": 5}}, "unknown option 'train.total_itr' (did you mean 'total_iter'?)"),
    ({"train": {"lr": "fast"}}, "option 'train.lr' must be float"),
    ({"train": {"optim": "SGD"}}, "option 'train.optim' must be one of Adam, AdamW"),
    ({"network": {"type": "Restromer"}}, "(did you mean 'Restormer'?)"),
    ({"network": {"type": "DnCNN", "n_c": 3}}, "unknown option 'network.n_c' (did you mean 'nc'?)"),
    ({"network": {"type": "DnCNN", "nb": "many"}}, "option 'network.nb' must be int"),
    ({"path": {"pretrain_network": "/no/such.pth"}}, "option 'path.pretrain_network': file or folder does not exist"),
    ({"datasets": {"train": {"type": "SyntheticCameraNoise", "batch_size": "4"}}},
     "option 'datasets.train.batch_size' must be int"),
])
def test_validation_errors_name_the_key(change, message):
    with pytest.raises(ConfigError) as err:
        validate({**minimal(), **change}, "train")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_required_keys():
    with pytest.raises(ConfigError, match="missing required option 'name'"):
        validate({"network": {"type": "DnCNN"}}, "train")
    with pytest.raises(ConfigError, match="missing required option 'datasets.train'"):
        validate({"name": "x", "network": {"type": "DnCNN"}}, "train")


@pytest.mark.parametrize("train_set", [{"type": "NoisyFolder"}, {"type": "NoisyFolder", "root": None},
                                       {"type": "PairedFolder", "crop_size": 32}])
def test_dataset_without_its_root_is_refused_before_anything_is_written(tmp_path, train_set):
    opt = write(tmp_path / "noroot.yml", {**minimal(), "datasets": {"train": train_set}})
    run = subprocess.run([sys.executable, str(REPO / "train.py"), "-opt", str(opt)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: option 'datasets.train.root' is required"
    assert not (tmp_path / "experiments").exists()


def test_misspelled_key_on_the_command_line_gives_one_line_and_exit_code_2(tmp_path):
    opt = write(tmp_path / "bad.yml", minimal(train={"totl_iter": 5}))
    run = subprocess.run([sys.executable, str(REPO / "train.py"), "-opt", str(opt)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: unknown option 'train.totl_iter' (did you mean 'total_iter'?)")
    assert not (tmp_path / "experiments").exists()  # nothing written


def test_missing_option_file_exit_code_2(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "valid.py"), "-opt", str(tmp_path / "none.yml")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "option file not found" in run.stderr and "Traceback" not in run.stderr


def test_option_file_names_fall_back_to_the_packaged_copies(tmp_path, monkeypatch):
    """Away from a checkout, options/... names the packaged file (bases beside it); a local file wins; a name
    found in neither place, or without the options/ prefix, is the one-line error."""
    assert (REPO / "options").resolve() == CONFIG_DIR  # a checkout's options/ is a link to the packaged files
    monkeypatch.chdir(tmp_path)
    assert find_option_file("options/train/demo.yml") == CONFIG_DIR / "train" / "demo.yml"
    opt = load_options("./options/train/amsnet_dncnn.yml")
    assert opt["network"]["type"] == "DnCNN" and opt["method"]["type"] == "AMSNet"  # method from base amsnet.yml
    (tmp_path / "options" / "train").mkdir(parents=True)
    write(tmp_path / "options" / "train" / "demo.yml", minimal())
    assert load_options("options/train/demo.yml")["name"] == "x"
    for missing in ("options/train/none.yml", "train/demo.yml", "options/../options/train/photos.yml"):
        with pytest.raises(ConfigError, match=r"^option file not found: \S+$"):
            load_options(missing)


def test_registry_unknown_name_and_broken_module_do_not_break_others():
    reg = Registry("thing", modules=["amcfd.no_such_module"])

    @reg.register()
    class Widget:
        def __init__(self, size: int = 1):
            self.size = size

    assert reg.build({"type": "Widget", "size": 3}).size == 3
    with pytest.raises(ConfigError) as err:
        reg.get("Widgte")
    text = str(err.value)
    assert "did you mean 'Widget'" in text and "known: Widget" in text and "amcfd.no_such_module" in text
    cfg = {"type": "Widget", "size": 2}
    reg.build(cfg)
    assert cfg == {"type": "Widget", "size": 2}  # build never mutates the caller's dict
    assert "DnCNN" in ARCHS.names()


@pytest.mark.parametrize("path", sorted((REPO / "options").glob("*/*.yml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_option_files_are_valid(path, monkeypatch):
    """Every key of every shipped option file is known and well typed; only data paths may be absent.
    Benchmark presets (options/bench) are checked with their own loader, and every stage's option file too."""
    monkeypatch.chdir(REPO)
    if path.parent.name == "bench":
        from amcfd.analysis.benchmark import load_benchmark

        try:
            cfg = load_benchmark(path)
        except ConfigError as err:
            assert "data.root" in str(err) or "does not exist" in str(err), str(err)
            return
        for entry in cfg["methods"]:
            assert not entry.get("train") or (REPO / entry["train"]).is_file(), entry
        return
    phase = "train" if path.parent.name == "train" else "valid"
    try:
        load_options(path, phase=phase)
    except ConfigError as err:
        assert "does not exist" in str(err) or ".root' is required" in str(err), str(err)
