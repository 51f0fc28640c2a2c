"""One benchmark of many methods on one set: self-supervised training through the engine, scores against clean.

``scripts/benchmark.py -opt options/bench/real.yml`` runs it. Each trained stage is a normal experiment (the
trainer of ``train.py``) built from a repository option file, pointed at the benchmark's training images (noisy
only), with the shared ``budget`` overrides; each row is scored with ``valid.py``'s functions (``build_denoiser``
+ ``engine.inference.evaluate``) on the pairs. Classical filters and imported checkpoints are rows too.

Benchmark option file::

    name: cc15_cpu                 # report: <work>/<name>.md, .json, .png
    work: results/benchmark        # experiments and evaluations: <work>/<name>/
    data: {root: ../shared/data/cc15, images: null}   # train on root/noisy, score on the pairs; or
    datasets: {train: {...}, eval: {...}}             # any registered training set and paired set
    budget: {train.total_iter: 4000, train.max_minutes: 6, ...}   # overrides of every trained stage
    metrics: [psnr, ssim, ssim_matlab, ssim_y]
    device: auto
    methods:                       # in order; a stage may use an earlier one
      - name: AMSNet               # experiment name
        train: options/train/photos.yml
        set: {method.pd_train: 5}  # this stage's own overrides (after the budget)
        from: STAGE                # path.pretrain_network: STAGE's final checkpoint (fine-tuning)
        teacher: STAGE             # method.teacher.checkpoint: STAGE's final checkpoint (distillation)
        rows: {AMSNet-B: {r3: false}, AMSNet-B-E: {r3: true}}    # label: method overrides at evaluation
      - name: bilateral
        classical: bilateral       # or nlm; parameters under 'params'
      - name: TM-BSN (SIDD weights)
        checkpoint: path/to/imported.pth                    # scripts/import_checkpoint.py output
        rows: {TM-BSN: {}}
        note: not trained on this data

A row that fails is recorded with its error and the others still run. A finished stage whose options did not
change is kept, and so is a row already scored on the same checkpoint with the same options, unless forced.
A stage whose training loss rose and stayed up (the trainer's warning, e.g. a learning rate too high for the
method) is reported with that warning.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml

from amcfd.analysis.results_doc import git_commit
from amcfd.metrics import report_key
from amcfd.registry import ConfigError

log = logging.getLogger("amcfd")

ENTRY_KEYS = {"name", "train", "set", "from", "teacher", "rows", "classical", "params", "checkpoint", "network",
              "note"}
TOP_KEYS = {"name", "work", "data", "datasets", "budget", "metrics", "device", "methods"}
DEFAULT_METRICS = ["psnr", "ssim", "ssim_matlab"]
# a folder's training crops when the method's option file gives none (its own sampling settings are kept)
FOLDER_SAMPLING = {"crop_size": 128, "augment": True, "repeat": 100, "batch_size": 2, "num_workers": 0}


# ----------------------------------------------------------------------------- classical references
def _per_image_uint8(x: torch.Tensor, filter_image) -> torch.Tensor:
    """``filter_image(u8, sigma)`` on each image of (B, C, H, W) in [0, 1] as an HxWxC uint8 array, with
    ``sigma`` its noise level in 0..255 (noise/estimate.py, measured on the noisy image itself)."""
    from amcfd.noise.estimate import noise_level

    out = []
    for image in x:
        u8 = np.round(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        sigma = float(noise_level(torch.from_numpy(u8).permute(2, 0, 1).float()[None] / 255)) * 255
        filtered = np.ascontiguousarray(filter_image(u8, sigma)).reshape(u8.shape)
        out.append(torch.from_numpy(filtered).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device)


def nlm(x: torch.Tensor, h: float | str = "auto", template: int = 7, search: int = 21) -> torch.Tensor:
    """OpenCV non-local means (``fastNlMeansDenoisingColored``), per image; ``h: auto`` = the image's own noise
    level in 0..255 (measured on the noisy image only), for luma and colour alike."""
    import cv2

    def one(u8: np.ndarray, sigma: float) -> np.ndarray:
        strength = sigma if h == "auto" else float(h)
        if u8.shape[-1] == 3:
            return cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, strength, strength, template,
                                                   search)[..., ::-1]
        return cv2.fastNlMeansDenoising(u8[..., 0], None, strength, template, search)

    return _per_image_uint8(x, one)


def bilateral(x: torch.Tensor, diameter: int = 5, sigma_color: float | str = "auto",
              sigma_space: float = 3.0) -> torch.Tensor:
    """OpenCV bilateral filter, per image; ``sigma_color: auto`` = twice the image's noise level in 0..255."""
    import cv2

    return _per_image_uint8(x, lambda u8, sigma: cv2.bilateralFilter(
        u8, diameter, 2 * sigma if sigma_color == "auto" else float(sigma_color), sigma_space))


CLASSICAL = {"nlm": nlm, "bilateral": bilateral}


# ----------------------------------------------------------------------------- options
def load_benchmark(path: str | Path, overrides=(), only=None) -> dict:
    """The benchmark option file, checked; ``overrides`` as ``KEY=VALUE`` (e.g. data.images=3); ``only``: keep
    these entries of ``methods`` and the earlier ones they train from or distil (``from`` / ``teacher``)."""
    from amcfd.options import apply_overrides

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark option file does not exist: {path}")
    cfg = apply_overrides(yaml.safe_load(path.read_text()) or {}, list(overrides))
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise ConfigError(f"benchmark option file {path}: unknown keys {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    if not cfg.get("name"):
        raise ConfigError(f"benchmark option file {path}: option 'name' is required")
    if bool(cfg.get("data")) == bool(cfg.get("datasets")):
        raise ConfigError("benchmark: give either 'data: {root: FOLDER}' or 'datasets: {train: ..., eval: ...}'")
    if cfg.get("data"):
        root = Path(cfg["data"].get("root") or "")
        if not (root / "noisy").is_dir() or not (root / "clean").is_dir():
            raise ConfigError(f"option 'data.root': {root} needs noisy/ and clean/ folders")
    elif not {"train", "eval"} <= set(cfg["datasets"]):
        raise ConfigError("option 'datasets' needs 'train' and 'eval' entries")
    methods = cfg.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ConfigError("option 'methods' must be a non-empty list")
    if only:
        names = [e.get("name") for e in methods if isinstance(e, dict)]
        missing = [n for n in only if n not in names]
        if missing:
            raise ConfigError(f"--only: no entry named {', '.join(map(repr, missing))} (entries: {', '.join(names)})")
        wanted = set(only)
        for entry in reversed(methods):
            if entry.get("name") in wanted:
                wanted.update(entry[k] for k in ("from", "teacher") if entry.get(k))
        cfg["methods"] = methods = [e for e in methods if e.get("name") in wanted]
    seen = set()
    for i, entry in enumerate(methods):
        where = f"methods[{i}]"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"option '{where}' needs a 'name'")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise ConfigError(f"option '{where}' ({entry['name']}): unknown keys {sorted(unknown)}")
        kinds = [k for k in ("train", "classical", "checkpoint") if entry.get(k)]
        if len(kinds) != 1:
            raise ConfigError(f"option '{where}' ({entry['name']}): give exactly one of train, classical, checkpoint")
        if entry.get("classical") and entry["classical"] not in CLASSICAL:
            raise ConfigError(f"option '{where}.classical': {entry['classical']!r} is not one of {sorted(CLASSICAL)}")
        for key in ("from", "teacher"):
            if entry.get(key) and entry[key] not in seen:
                raise ConfigError(f"option '{where}.{key}': {entry[key]!r} is not an earlier trained entry")
        rows = entry.get("rows")
        if rows is not None and (not isinstance(rows, dict)
                                 or any(not isinstance(v, dict) for v in rows.values())):
            raise ConfigError(f"option '{where}.rows' ({entry['name']}) must map each row's label to its method "
                              f"overrides ({{}} for none), got {rows!r}")
        if entry.get("train"):
            seen.add(entry["name"])
    cfg.setdefault("work", "results/benchmark")
    cfg.setdefault("metrics", DEFAULT_METRICS)
    cfg.setdefault("budget", {})
    cfg.setdefault("device", "auto")
    return cfg


def dataset_entries(cfg: dict) -> tuple[dict, dict]:
    """(training set, evaluation set) option entries."""
    if cfg.get("datasets"):
        return dict(cfg["datasets"]["train"]), dict(cfg["datasets"]["eval"])
    root, images = str(Path(cfg["data"]["root"]).resolve()), cfg["data"].get("images")
    limit = {"max_images": images} if images else {}
    return ({"type": "NoisyFolder", "root": str(Path(root) / "noisy"), **limit},
            {"type": "PairedFolder", "root": root, **limit})


def rows_of(entry: dict) -> dict:
    """{label: method overrides} of an entry (one row named after it by default)."""
    return dict(entry.get("rows") or {entry["name"]: {}})


def stage_options(cfg: dict, entry: dict, work: Path, checkpoints: dict) -> dict:
    """A trained entry's option dict: its option file, the benchmark's training images (keeping the file's crop,
    batch and loader settings), no validation, quiet console, then ``budget`` and the entry's ``set``."""
    from amcfd.data.folders import training_set_on
    from amcfd.options import apply_overrides, load_options

    opt = load_options(entry["train"])
    opt["name"], opt["device"] = entry["name"], cfg["device"]
    train, _ = dataset_entries(cfg)
    if not cfg.get("datasets"):          # a folder of noisy images: keep the file's crops, batch and loader
        train = training_set_on(train, opt.get("datasets", {}).get("train", {}), FOLDER_SAMPLING)
    opt["datasets"] = {"train": train}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["logger"] = {**opt.get("logger", {}), "use_tb_logger": False, "progress_bar": True}
    opt.setdefault("path", {})["experiments_root"] = str(work / "experiments")
    if entry.get("from"):
        opt["path"]["pretrain_network"] = str(checkpoints[entry["from"]])
    if entry.get("teacher"):
        opt["method"].setdefault("teacher", {})["checkpoint"] = str(checkpoints[entry["teacher"]])
        opt["method"]["teacher"]["cache_dir"] = str(work / "teacher_targets")
    overrides = [f"{k}={_yaml_value(v)}" for k, v in {**cfg["budget"], **(entry.get("set") or {})}.items()]
    opt = apply_overrides(opt, overrides)
    saves = opt.setdefault("logger", {}).get("save_checkpoint_freq", 0)
    if not saves or opt["train"]["total_iter"] % saves:          # the final step is saved
        opt["logger"]["save_checkpoint_freq"] = opt["train"]["total_iter"]
    return opt


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- running
class Benchmark:
    """Runs the entries of a checked benchmark option dict (``load_benchmark``); results in ``self.rows``."""

    def __init__(self, cfg: dict, force: bool | list = False, progress: bool = True):
        self.cfg, self.force, self.progress = cfg, force, progress
        self.work = Path(cfg["work"]) / cfg["name"]
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_file = self.work / "state.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"rows": {}}
        self.checkpoints: dict[str, Path] = {}
        self.retrained: set[str] = set()

    def forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, list) and name in self.force)

    def save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.state_file)

    def run(self) -> dict:
        noisy = self.score("noisy input", {"kind": "reference"}, lambda: (lambda x: x, None))
        for entry in self.cfg["methods"]:
            self.run_entry(entry)
        return {"noisy input": noisy, **{k: v for k, v in self.state["rows"].items() if k != "noisy input"}}

    def run_entry(self, entry: dict) -> None:
        name = entry["name"]
        try:
            depends = [entry[k] for k in ("from", "teacher") if entry.get(k)]
            if any(d not in self.checkpoints for d in depends):
                raise RuntimeError(f"needs {', '.join(depends)}, which failed")
            if entry.get("train"):
                self.checkpoints[name] = self.train(entry)
        except Exception as exc:                 # noqa: BLE001 - a failed method is reported, the others go on
            for label in rows_of(entry):
                self.fail(label, entry, exc)
            return
        for label, overrides in rows_of(entry).items():
            info = {"kind": "classical" if entry.get("classical") else "imported" if entry.get("checkpoint")
                    else "trained", "entry": name, "method": overrides, "note": entry.get("note", "")}
            try:
                if entry.get("classical"):
                    params = {**(entry.get("params") or {}), **overrides}
                    fn = CLASSICAL[entry["classical"]]
                    self.score(label, {**info, "params": params},
                               lambda fn=fn, params=params: (lambda x: fn(x, **params), None))
                else:
                    checkpoint = self.checkpoints.get(name) or Path(entry["checkpoint"])
                    self.score(label, {**info, "checkpoint": str(checkpoint)},
                               lambda c=checkpoint, o=overrides: self.denoiser(c, o, entry.get("network")),
                               retrained=name in self.retrained)
            except Exception as exc:             # noqa: BLE001
                self.fail(label, entry, exc)

    def fail(self, label: str, entry: dict, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        log.warning("benchmark: %s failed: %s", label, message)
        log.debug("%s", traceback.format_exc())
        self.state["rows"][label] = {"failed": message, "entry": entry["name"], "note": entry.get("note", "")}
        self.save_state()

    def train(self, entry: dict) -> Path:
        """Train the stage unless it finished before with the same options (and is not forced)."""
        from amcfd.engine.checkpoint import finished_run
        from amcfd.engine.trainer import Trainer
        from amcfd.options import validate

        opt = stage_options(self.cfg, entry, self.work, self.checkpoints)
        folder = self.work / "experiments" / entry["name"]
        key = digest(opt)
        stages = self.state.setdefault("stages", {})
        done = finished_run(folder)
        upstream = any(entry.get(k) in self.retrained for k in ("from", "teacher"))
        if done is not None and stages.get(entry["name"], {}).get("options") == key and not upstream \
                and not self.forced(entry["name"]):
            log.warning("benchmark: %s: kept %s", entry["name"], done)
            return done
        if folder.exists():                        # a changed or forced stage starts again from scratch
            import shutil

            shutil.rmtree(folder)
        start = time.perf_counter()
        trainer = Trainer(validate(opt, "train"))
        trainer.train()
        stages[entry["name"]] = {"options": key, "steps": trainer.iteration,
                                 "minutes": round((time.perf_counter() - start) / 60, 2), "commit": git_commit()}
        if trainer.loss_watch is not None and trainer.loss_watch.message:
            stages[entry["name"]]["warning"] = trainer.loss_watch.message
        self.retrained.add(entry["name"])
        self.save_state()
        return finished_run(folder)

    def denoiser(self, checkpoint: Path, overrides: dict, network: dict | None):
        """(denoise_fn, method) as valid.py builds them from the checkpoint and the row's method overrides."""
        from amcfd.engine.inference import build_denoiser
        from amcfd.options import validate

        opt = {"name": "benchmark", "device": self.cfg["device"], "method": dict(overrides),
               "path": {"pretrain_network": str(checkpoint)}}
        if network:
            opt["network"] = network
        method, fn = build_denoiser(validate(opt, "valid"))
        return fn, method

    def score(self, label: str, info: dict, build, retrained: bool = False) -> dict:
        """Evaluate one row on the pairs (kept when scored before on the same inputs): metrics per image and
        mean, ms per image, parameters and GFLOPs per image (the first image's size)."""
        from amcfd.engine.inference import build_dataset, evaluate

        _, eval_set = dataset_entries(self.cfg)
        checkpoint = info.get("checkpoint")
        stamp = Path(checkpoint).stat().st_mtime if checkpoint and Path(checkpoint).is_file() else None
        key = digest({**info, "eval": eval_set, "metrics": self.cfg["metrics"], "stamp": stamp})
        old = self.state["rows"].get(label)
        if old and old.get("key") == key and "failed" not in old and not retrained and not self.forced(label):
            return old
        fn, method = build()
        dataset, loader_opts = build_dataset(eval_set, "benchmark eval")
        device = next(method.parameters()).device if method is not None else torch.device("cpu")
        bar = self._bar(label, len(dataset))
        result = evaluate(fn, dataset, loader_opts, self.cfg["metrics"], device,
                          on_image=(lambda item, out: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        result.pop("visuals")
        row = {**info, "key": key, "n": result["n"], "commit": git_commit(), "threads": torch.get_num_threads(),
               **{report_key(m): result[m] for m in self.cfg["metrics"]},
               "ms_per_image": 1000 * result["sec_per_image"],
               "per_image": {k: {report_key(m): v[m] for m in v} for k, v in result["per_image"].items()}}
        if method is not None:
            row["params"] = sum(p.numel() for p in method.net.parameters())
            row["gflops"] = self.gflops(fn, dataset, device)
        self.state["rows"][label] = row
        self.save_state()
        return row

    def gflops(self, fn, dataset, device) -> float | None:
        """Floating-point operations of one denoising of the first image (torch's FlopCounterMode: convolutions
        and matrix products), in GFLOPs. One torch thread meanwhile: the counter sees only its own thread, and
        CPU inference spreads chunks over one worker thread per torch thread (ops/batching.py)."""
        from torch.utils.flop_counter import FlopCounterMode

        noisy = dataset[0]["noisy"][None].to(device)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                fn(noisy)
        finally:
            torch.set_num_threads(threads)
        return counter.get_total_flops() / 1e9

    def _bar(self, label: str, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"{label} (eval)", dynamic_ncols=True, leave=False)


# ----------------------------------------------------------------------------- reports
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (ms, psnr) that no other point beats on both (faster or equal and better or
    equal, one strictly), sorted by time."""
    front = []
    for i, (t, q) in enumerate(points):
        dominated = any((t2 <= t and q2 >= q) and (t2 < t or q2 > q) for j, (t2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def scored(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if "failed" not in v and k != "noisy input"}


def markdown(cfg: dict, rows: dict) -> str:
    """Mean table (every row; failed ones with their error) and the per-image PSNR table."""
    from amcfd.metrics import metric_label

    metrics = cfg["metrics"]
    names = [report_key(m) for m in metrics]
    noisy = rows["noisy input"]
    front = _front_labels(rows)
    head = ["method", *(metric_label(m) for m in metrics), "gain (dB)", "ms / image", "params", "GFLOPs / image",
            "Pareto", "kind"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in rows.items():
        if "failed" in r:
            lines.append(f"| {label} | failed: {r['failed'].replace('|', '/')} |" + " |" * (len(head) - 2))
            continue
        cells = [f"{r[n]:.2f}" if n.startswith("psnr") else f"{r[n]:.4f}" for n in names]
        gain = f"{r['psnr'] - noisy['psnr']:+.2f}" if "psnr" in r and "psnr" in noisy else ""
        ms = f"{r['ms_per_image']:.0f}" if label != "noisy input" else ""
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else ""
        flops = f"{r['gflops']:.1f}" if r.get("gflops") is not None else ""
        kind = r.get("kind", "")
        if r.get("note"):
            kind += f" ({r['note']})"
        lines.append(f"| {label} | " + " | ".join([*cells, gain, ms, params, flops,
                                                   "yes" if label in front else "", kind]) + " |")
    ok = [k for k, v in rows.items() if "failed" not in v]
    if "psnr" in names and ok:
        lines += ["", "Per image, PSNR (dB):", "", "| image | " + " | ".join(ok) + " |", "|---|" + "---|" * len(ok)]
        for image in sorted(noisy["per_image"]):
            cells = [f"{rows[k]['per_image'][image]['psnr']:.2f}" if image in rows[k]["per_image"] else ""
                     for k in ok]
            lines.append(f"| {image} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _front_labels(rows: dict) -> set:
    good = scored(rows)
    labels = [k for k, v in good.items() if "psnr" in v and v["ms_per_image"] > 0]
    points = [(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels]
    return {labels[i] for i in pareto_front(points)}


def plot(rows: dict, path: Path, title: str, size: tuple[int, int] = (1100, 700)) -> Path:
    """PSNR against ms per image (log scale) as a PNG (OpenCV drawing): every method labelled, the noisy
    input's PSNR as a dashed line, the Pareto front joined."""
    import cv2

    good = {k: v for k, v in scored(rows).items() if "psnr" in v and v["ms_per_image"] > 0}
    width, height = size
    left, right, top, bottom = 90, 40, 60, 70
    img = np.full((height, width, 3), 255, np.uint8)
    if not good:
        cv2.putText(img, "no scored method", (left, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
        cv2.imwrite(str(path), img)
        return path
    ms = np.array([v["ms_per_image"] for v in good.values()])
    q = np.array([v["psnr"] for v in good.values()] + [rows["noisy input"]["psnr"]])
    lo_t, hi_t = math.floor(math.log10(ms.min())), math.ceil(math.log10(ms.max()))
    hi_t = max(hi_t, lo_t + 1)
    lo_q, hi_q = math.floor(q.min() - 0.5), math.ceil(q.max() + 0.5)

    def xy(t: float, p: float) -> tuple[int, int]:
        x = left + (math.log10(t) - lo_t) / (hi_t - lo_t) * (width - left - right)
        y = height - bottom - (p - lo_q) / (hi_q - lo_q) * (height - top - bottom)
        return int(round(x)), int(round(y))

    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    for e in range(lo_t, hi_t + 1):                                   # decades
        x, _ = xy(10.0 ** e, lo_q)
        cv2.line(img, (x, top), (x, height - bottom), grey, 1)
        cv2.putText(img, f"{10 ** e:g}", (x - 15, height - bottom + 22), font, 0.5, black, 1, cv2.LINE_AA)
    step = max(1, (hi_q - lo_q) // 8)
    for p in range(lo_q, hi_q + 1, step):
        _, y = xy(10.0 ** lo_t, p)
        cv2.line(img, (left, y), (width - right, y), grey, 1)
        cv2.putText(img, f"{p}", (left - 35, y + 5), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), black, 1)
    _, y0 = xy(10.0 ** lo_t, rows["noisy input"]["psnr"])
    for x in range(left, width - right, 12):                          # the noisy input: dashed
        cv2.line(img, (x, y0), (min(x + 6, width - right), y0), (120, 120, 120), 1)
    noisy_label = f"noisy input {rows['noisy input']['psnr']:.2f} dB"
    cv2.putText(img, noisy_label, (left + 6, y0 - 6), font, 0.45, (120, 120, 120), 1, cv2.LINE_AA)
    (nw, nh), _ = cv2.getTextSize(noisy_label, font, 0.45, 1)
    labels = list(good)
    front = pareto_front([(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels])
    pts = [xy(good[labels[i]]["ms_per_image"], good[labels[i]]["psnr"]) for i in front]
    for a, b in zip(pts, pts[1:]):
        cv2.line(img, a, b, (40, 40, 220), 2, cv2.LINE_AA)
    points = [xy(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels]
    for i, (x, y) in enumerate(points):
        cv2.circle(img, (x, y), 6, (40, 40, 220) if i in front else (180, 90, 20), -1, cv2.LINE_AA)
    placed: list = [(left + 6, y0 - 6 - nh, left + 6 + nw, y0 - 6)]   # label boxes: each takes the first free spot
    for k, (x, y) in zip(labels, points):
        (tw, th), _ = cv2.getTextSize(k, font, 0.45, 1)
        spots = [(x + 9, y - 6), (x + 9, y + 16), (x - 9 - tw, y - 6), (x - 9 - tw, y + 16), (x + 9, y - 20),
                 (x - 9 - tw, y - 20), (x + 9, y + 30), (x - 9 - tw, y + 30)]
        spots = [(tx, ty) for tx, ty in spots if tx >= 2 and tx + tw <= width - 2] or spots

        tx, ty = next(((sx, sy) for sx, sy in spots
                       if all(sx + tw < a or sx > c or sy < b or sy - th > d for a, b, c, d in placed)), spots[0])
        placed.append((tx, ty - th, tx + tw, ty))
        cv2.putText(img, k, (tx, ty), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 35), font, 0.7, black, 2, cv2.LINE_AA)
    cv2.putText(img, "ms per image (log scale); red: Pareto front", (left + 200, height - 20), font, 0.55, black,
                1, cv2.LINE_AA)
    cv2.putText(img, "PSNR (dB)", (10, top - 10), font, 0.55, black, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def write_reports(cfg: dict, rows: dict, stages: dict, command: str) -> dict:
    """<work>/<name>.md, .json and .png; returns their paths."""
    from amcfd.analysis.results_doc import provenance_line

    work = Path(cfg["work"])
    work.mkdir(parents=True, exist_ok=True)
    base = work / cfg["name"]
    text = markdown(cfg, rows)
    minutes = ", ".join(f"{k} {v['steps']} steps / {v['minutes']} min"
                        + (f" (warning: {v['warning']})" if v.get("warning") else "") for k, v in stages.items())
    commits = sorted({v["commit"] for v in [*stages.values(), *rows.values()] if v.get("commit")})
    threads = sorted({v["threads"] for v in rows.values() if v.get("threads")})
    header = (f"{provenance_line(command)}\n\n{rows['noisy input']['n']} images; training reads only the noisy "
              f"images. Shared budget: {', '.join(f'{k}={v}' for k, v in cfg['budget'].items()) or 'none'}. "
              f"Training: {minutes or 'none'}."
              + (f" Trained and scored at commit {', '.join(commits)} (kept results are not measured again)."
                 if commits else "")
              + (f" ms / image with {', '.join(map(str, threads))} torch thread(s).\n" if threads else "\n"))
    (base.with_suffix(".md")).write_text(f"# Benchmark: {cfg['name']}\n\n{header}\n{text}\n")
    report = {"name": cfg["name"], "command": command, "config": copy.deepcopy(cfg), "stages": stages, "rows": rows}
    (base.with_suffix(".json")).write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, base.with_suffix(".png"), f"{cfg['name']}: PSNR vs time per image")
    return {"md": base.with_suffix(".md"), "json": base.with_suffix(".json"), "png": base.with_suffix(".png"),
            "table": text, "header": header}


README_BEGIN, README_END = "<!-- benchmark table: begin -->", "<!-- benchmark table: end -->"


def write_readme_table(readme: Path, name: str, rows: dict, command: str) -> None:
    """The README's short table (method, PSNR, SSIM, ms per image, parameters) between its two markers."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ConfigError(f"{readme}: no '{README_BEGIN}' ... '{README_END}' block to write the table into")
    noisy = rows["noisy input"]
    lines = [README_BEGIN, f"*{name}: `{command}` (all numbers and per-image values: docs/results.md)*", "",
             "| method | PSNR (dB) | SSIM (MATLAB) | ms / image | parameters |", "|---|---|---|---|---|",
             f"| noisy input | {noisy['psnr']:.2f} | {noisy.get('ssim_matlab', float('nan')):.4f} | | |"]
    for label, r in scored(rows).items():
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
        lines.append(f"| {label} | {r['psnr']:.2f} | {r.get('ssim_matlab', float('nan')):.4f} | "
                     f"{r['ms_per_image']:.0f} | {params} |")
    lines.append(README_END)
    before, rest = text.split(README_BEGIN, 1)
    readme.write_text(before + "\n".join(lines) + rest.split(README_END, 1)[1])
