"""The three stages of AM-CFD on a folder of photos, as ``amcfd-denoise`` trains them (engine/pipeline.py runs them).

1. teacher: AMSNet on the photos themselves (options/train/photos.yml; its ``auto`` choices come from them);
2. coarse:  AM-CFD coarse distillation of that teacher into a single-pass student (distill_coarse_cpu.yml). The
   teacher's targets are computed inside the stage's budget, so they are cheap: the teacher's own PD stride,
   without R3, one rotated view, tiled (12-megapixel photos fit), from regions of ``TARGET_PIXELS`` of big photos;
3. fine:    self-enhanced fine distillation of the coarse student (distill_fine_cpu.yml).

Each stage trains for its ``SHARE`` of the budget with ``fill_budget`` (its iteration count fitted to the time,
up or down). On CUDA the packaged option files train larger networks (``CUDA_NETWORKS``: AMSNet's published NAFNet
teacher, the paper's NAFNet student, batch ``CUDA_BATCH``).
"""
from __future__ import annotations

from pathlib import Path

from amcfd.engine.pipeline import Stage

SHARE = {"teacher": 0.45, "coarse": 0.35, "fine": 0.20}   # of the budget
FILES = {"teacher": "photos.yml", "coarse": "distill_coarse_cpu.yml", "fine": "distill_fine_cpu.yml"}
TEACHER_INFERENCE = {"r3": False}      # the coarse stage's teacher (its pd_test: the one it was trained with)
TEACHER_VIEWS, TEACHER_TILE = [1], 512
TARGET_PIXELS = 1 << 20     # per photo: a larger one gives the coarse stage 512x512 regions of this many pixels
CUDA_NETWORKS = {"teacher": {"type": "NAFNetBase", "preset": "published"},
                 "coarse": {"type": "NAFNet", "preset": "amcfd_student"},
                 "fine": {"type": "NAFNet", "preset": "amcfd_student"}}
CUDA_BATCH = 8


def stage_options(stage: str, options_dir: Path, device_type: str) -> dict:
    """One stage's options: its option file on a folder of noisy photos (``datasets.train.root`` is set by the
    caller), no validation, the budget filled, and on CUDA (packaged files only) the networks above."""
    from amcfd import options
    from amcfd.data.folders import training_set_on

    packaged = options_dir is None
    opt = options.load_options(Path(options_dir or options.CONFIG_DIR) / "train" / FILES[stage])
    train_set = training_set_on({"type": "NoisyFolder", "root": None}, opt["datasets"]["train"])
    if device_type == "cuda" and packaged:
        opt["network"] = dict(CUDA_NETWORKS[stage])
        train_set["batch_size"] = CUDA_BATCH
    opt["datasets"] = {"train": train_set}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["train"] = {**opt["train"], "fill_budget": True}
    opt["logger"] = {**opt.get("logger", {}), "use_tb_logger": False}
    opt.pop("name", None)
    opt.get("path", {}).pop("pretrain_network", None)
    if stage == "coarse":
        teacher = {k: v for k, v in opt["method"]["teacher"].items() if k not in ("checkpoint", "method")}
        opt["method"] = {**opt["method"], "teacher": {**teacher, "tile": TEACHER_TILE, "method": TEACHER_INFERENCE},
                         "aug_modes": TEACHER_VIEWS}
        train_set["max_pixels"] = TARGET_PIXELS
    return opt


def teacher_stride_as_trained(opt: dict) -> None:
    """The coarse stage's teacher infers with the PD stride it was trained with (its ``auto`` choice, in its
    checkpoint's options), not AMSNet-P-E's default."""
    from amcfd.engine.checkpoint import load_checkpoint

    teacher = opt["method"]["teacher"]
    trained = load_checkpoint(teacher["checkpoint"])["opt"]["method"]
    teacher["method"] = {"pd_test": trained["pd_test"], **teacher.get("method", {})}


def amcfd_stages(photos: Path, options_dir: Path | None, device: str, device_type: str) -> list[Stage]:
    """AM-CFD's three stages on the noisy photos in ``photos`` (``options_dir``: None for the packaged files), run
    on ``device`` (option 'device'), whose type is ``device_type``."""
    def on_photos(stage: str) -> dict:
        opt = stage_options(stage, options_dir, device_type)
        opt["datasets"]["train"]["root"], opt["device"] = str(photos), device
        return opt

    return [Stage("teacher", on_photos("teacher"), share=SHARE["teacher"]),
            Stage("coarse", on_photos("coarse"), teacher="teacher", share=SHARE["coarse"],
                  finish=teacher_stride_as_trained),
            Stage("fine", on_photos("fine"), starts_from="coarse", share=SHARE["fine"])]
