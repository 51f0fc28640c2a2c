"""``auto`` option values: choices made from the training images' noise before training starts.

A method lists the options that may be ``auto`` in its class attribute ``AUTO_OPTIONS`` (AMSNet: pd_train,
pd_test, recharge). ``resolve_auto`` measures the noise of the training set's noisy images (``noise.estimate``:
the image-wide level, as the classical core reads it, and the correlation at 1-3 px, medians over at most
``MAX_IMAGES`` whole images, never a clean image), turns
the measurement into values (``noise.estimate.suggest_choices``), writes them into the options (so options.yml
and the checkpoint hold plain values) and returns what it measured and chose, for the log and run.yml. A value
given in the options is never touched: an override wins. The same images give the same choices (no randomness).
"""
from __future__ import annotations

import copy

import numpy as np

from amcfd.noise.estimate import MEASURED_SIDE, suggest_choices
from amcfd.registry import METHODS, ConfigError

AUTO = "auto"
MAX_IMAGES = 32     # measure at most this many training images (evenly spaced); the medians settle well before
MAX_SIDE = MEASURED_SIDE   # of a larger image, the central MAX_SIDE x MAX_SIDE region is measured


def auto_options(method_cfg: dict) -> list[str]:
    """The method options set to ``auto``; one the method cannot choose is a one-line ConfigError."""
    keys = [k for k, v in method_cfg.items() if v == AUTO]
    if keys:
        allowed = getattr(METHODS.get(method_cfg["type"], where="method.type"), "AUTO_OPTIONS", ())
        for key in keys:
            if key not in allowed:
                hint = f" (it can choose: {', '.join(allowed)})" if allowed else ""
                raise ConfigError(f"option 'method.{key}' cannot be 'auto' for method "
                                  f"{method_cfg['type']}{hint}")
    return keys


def measure_dataset(dataset, max_images: int = MAX_IMAGES) -> dict:
    """noise.estimate.measure_folder on a dataset's whole noisy images (``image_arrays``), evenly spaced."""
    import torch

    from amcfd.data.imageio import raw_to_float, to_tensor
    from amcfd.noise.estimate import measure_folder

    if not hasattr(dataset, "image_arrays"):
        raise ConfigError(f"'auto' options need whole training images; dataset {type(dataset).__name__} "
                          "does not provide them: give the values")
    count = len(getattr(dataset, "names", range(len(dataset))))
    picks = np.unique(np.linspace(0, count - 1, min(count, max_images)).round().astype(int))

    def images():
        for i in picks:
            arr = central_region(dataset.image_arrays(int(i))[0]["noisy"], MAX_SIDE)
            yield to_tensor(raw_to_float(arr) if arr.dtype != np.float32 else arr).to(torch.float64)

    return measure_folder(images())


def central_region(arr: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` region of an HxWxC array (a side shorter than ``side`` is kept whole)."""
    top, left = max(0, (arr.shape[0] - side) // 2), max(0, (arr.shape[1] - side) // 2)
    return arr[top:top + side, left:left + side]


def resolve_auto(opt: dict, dataset) -> tuple[dict, dict]:
    """(options with every ``auto`` replaced, record {'chosen': {option: value}, 'measured': {...}})."""
    keys = auto_options(opt["method"])
    if not keys:
        return opt, {}
    stats = measure_dataset(dataset)
    if not stats["images"]:
        reasons = "; ".join(f"{n}: {r}" for n, r in stats["skipped"][:3])
        raise ConfigError(f"'auto' options: no training image could be measured ({reasons}); give the values")
    values = suggest_choices(stats["median_corr"], stats["median_level"])
    opt = copy.deepcopy(opt)
    chosen = {}
    for key in keys:
        opt["method"][key] = chosen[f"method.{key}"] = values[key]
    measured = {"images": len(stats["images"]), "skipped": len(stats["skipped"]),
                "noise_level_255": round(stats["median_level"] * 255, 3),
                "correlation": {int(s): round(c, 3) for s, c in stats["median_corr"].items()}}
    return opt, {"chosen": chosen, "measured": measured}


def auto_summary(record: dict) -> str:
    """One log line: what ``resolve_auto`` chose and from what."""
    measured = record["measured"]
    corr = ", ".join(f"{c:.2f} at {s} px" for s, c in measured["correlation"].items())
    chosen = ", ".join(f"{k} = {v}" for k, v in record["chosen"].items())
    return (f"auto: {chosen} (from {measured['images']} training images: noise std "
            f"{measured['noise_level_255']:.2f}/255, correlation {corr})")
