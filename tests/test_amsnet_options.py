"""The AMSNet option files load, validate and build their method."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from amcfd.options import load_options, validate
from amcfd.registry import METHODS

OPTIONS = Path(__file__).resolve().parents[1] / "options"
TRAIN_FILES = sorted((OPTIONS / "train").glob("amsnet*.yml"))
TEST_FILES = sorted((OPTIONS / "test").glob("amsnet*.yml"))
PATH_KEYS = ("root", "noisy_mat", "gt_mat", "pretrain_network")


def point_paths_to(opt: dict, existing: Path) -> dict:
    """Replace every input path (datasets, checkpoint) by an existing one: the data is not here."""
    for cfg in list(opt.get("datasets", {}).values()) + [opt.setdefault("path", {})]:
        for key in PATH_KEYS:
            if cfg.get(key):
                cfg[key] = str(existing)
    return opt


def test_all_expected_files_exist():
    names = {p.name for p in TRAIN_FILES}
    assert {"amsnet.yml", "amsnet_finetune.yml", "amsnet_nafnet.yml", "amsnet_unet.yml", "amsnet_dncnn.yml",
            "amsnet_deamnet.yml"} <= names
    assert {"amsnet.yml", "amsnet_e.yml"} <= {p.name for p in TEST_FILES}


@pytest.mark.parametrize("path", TRAIN_FILES + TEST_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_option_file_validates_and_builds_its_method(path, tmp_path):
    phase = "train" if path.parent.name == "train" else "valid"
    opt = validate(point_paths_to(load_options(path), tmp_path), phase)
    method = METHODS.build(opt["method"], nn.Identity(), where="method")
    assert type(method).__name__ == "AMSNet"
    if phase == "train":
        assert opt["network"]["type"] in {"Restormer", "NAFNetBase", "UNet", "DnCNN", "DeamNet"}
        assert (method.pd_train, method.pd_test, opt["train"]["optim"], opt["train"]["lr"]) in {
            (5, 2, "AdamW", 1e-4), (5, 2, "AdamW", 1e-5)}
        assert opt["datasets"]["train"]["crop_size"] == 160
        assert method.finetune_smooth == (path.name == "amsnet_finetune.yml")
    else:
        assert method.r3 == (path.name == "amsnet_e.yml")
