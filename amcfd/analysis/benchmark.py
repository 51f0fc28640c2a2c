"""One benchmark of many methods on one set: its option file (the specification) and the runner.

``scripts/benchmark.py -opt options/bench/real.yml`` runs it. Each trained stage is a normal experiment (the
trainer of ``train.py``) built from a repository option file, pointed at the benchmark's training images (noisy
only), with the shared ``budget`` overrides; each row is scored with ``valid.py``'s functions (``build_denoiser``
+ ``engine.inference.evaluate``) on the pairs. Classical filters and imported checkpoints are rows too. The
reports are written by ``analysis/report.py``, docs/results.md and the README's table by ``analysis/results_doc.py``.

Benchmark option file::

    name: cc15_cpu                 # report: <work>/<name>.md, .json, .png
    work: results/benchmark        # experiments and evaluations: <work>/<name>/
    data: {root: ../shared/data/cc15, images: null}   # train on root/noisy, score on the pairs; or
    data: synthetic                                   # the demo's synthetic images (options/{train,test}/demo.yml)
    datasets: {train: {...}, eval: {...}}             # or any registered training set and paired set
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
        # a row's 'test' key holds test options instead: {AMSNet-B-E bf16: {r3: true, test: {amp: bf16}}}
      - name: bilateral
        classical: bilateral       # or nlm (analysis/classical.py); parameters under 'params', or per row:
        rows: {BF 7/30/3: {diameter: 7, sigma_color: 30, sigma_space: 3}}
      - name: TM-BSN (SIDD weights)
        checkpoint: tmbsn-sidd      # a released model's name (amcfd-weights list), or an imported file's path
        rows: {TM-BSN: {}}
        note: not trained on this data
      - name: AP-BSN (15 min)
        train: options/train/apbsn.yml
        set: {train.max_minutes: 15}
        optional: true             # run only when --only names it (e.g. a longer run that explains a row)
        longer_of: AP-BSN          # a longer run of that entry: the report says whether its rows below input climb

A row that fails is recorded with its error and the others still run. The trained entries are the stages of a
pipeline (engine/pipeline.py, as amcfd-denoise's): each in <work>/<name>/experiments/<entry>-<identity>, named
after its options (every default filled in), the training images' contents and the stages it starts from, so a
finished stage is kept unless forced (a larger ``train.max_minutes`` extends it), and so is a row already scored
on the same checkpoint with the same options.
A stage whose training loss rose and stayed up (the trainer's warning, e.g. a learning rate too high for the
method) is reported with that warning, and a stage's ``auto`` choices with what they were measured from.
"""
from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path

import torch
import yaml

from amcfd.analysis.classical import CLASSICAL
from amcfd.hub.weights import resolve_checkpoint
from amcfd.metrics import report_key
from amcfd.provenance import digest, git_commit
from amcfd.registry import ConfigError

log = logging.getLogger("amcfd")

ENTRY_KEYS = {"name", "train", "set", "from", "teacher", "rows", "classical", "params", "checkpoint", "network",
              "note", "optional", "longer_of"}
TOP_KEYS = {"name", "work", "data", "datasets", "budget", "metrics", "device", "methods"}
DEFAULT_METRICS = ["psnr", "ssim", "ssim_matlab"]
# a folder's training crops when the method's option file gives none (its own sampling settings are kept)
FOLDER_SAMPLING = {"crop_size": 128, "augment": True, "repeat": 100, "batch_size": 2, "num_workers": 0}
SYNTHETIC = "synthetic"    # data: the demo's training images and its held-out pairs
SYNTHETIC_SETS = ("options/train/demo.yml", "train"), ("options/test/demo.yml", "val_synthetic")


# ----------------------------------------------------------------------------- options
def load_benchmark(path: str | Path, overrides=(), only=None) -> dict:
    """The benchmark option file, checked; ``overrides`` as ``KEY=VALUE`` (e.g. data.images=3); ``only``: keep
    these entries of ``methods`` and the earlier ones they train from or distil (``from`` / ``teacher``).
    Entries marked ``optional: true`` are kept only when ``only`` names them."""
    from amcfd.options import apply_overrides

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark option file does not exist: {path}")
    cfg = apply_overrides(yaml.safe_load(path.read_text()) or {}, list(overrides))
    unknown = {k for k in set(cfg) - TOP_KEYS if not str(k).startswith("x-")}    # x-...: YAML anchors
    if unknown:
        raise ConfigError(f"benchmark option file {path}: unknown keys {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    if not cfg.get("name"):
        raise ConfigError(f"benchmark option file {path}: option 'name' is required")
    data = cfg.get("data")
    if bool(data) == bool(cfg.get("datasets")):
        raise ConfigError(f"benchmark: give either 'data: {{root: FOLDER}}', 'data: {SYNTHETIC}' or "
                          "'datasets: {train: ..., eval: ...}'")
    if cfg.get("datasets") and not {"train", "eval"} <= set(cfg["datasets"]):
        raise ConfigError("option 'datasets' needs 'train' and 'eval' entries")
    if isinstance(data, dict):
        root = Path(data.get("root") or "")
        if not (root / "noisy").is_dir() or not (root / "clean").is_dir():
            raise ConfigError(f"option 'data.root': {root} needs noisy/ and clean/ folders")
    elif data and data != SYNTHETIC:
        raise ConfigError(f"option 'data' must be {{root: FOLDER, images: N}} or {SYNTHETIC!r}, got {data!r}")
    methods = cfg.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ConfigError("option 'methods' must be a non-empty list")
    names = [e.get("name") for e in methods if isinstance(e, dict)]
    for entry in methods:
        if isinstance(entry, dict) and entry.get("longer_of") and entry["longer_of"] not in names:
            raise ConfigError(f"option 'longer_of' of {entry.get('name')!r}: no entry named {entry['longer_of']!r}")
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise ConfigError(f"--only: no entry named {', '.join(map(repr, missing))} (entries: {', '.join(names)})")
        wanted = set(only)
        for entry in reversed(methods):
            if entry.get("name") in wanted:
                wanted.update(entry[k] for k in ("from", "teacher") if entry.get(k))
        cfg["methods"] = methods = [e for e in methods if e.get("name") in wanted]
    else:
        cfg["methods"] = methods = [e for e in methods if not (isinstance(e, dict) and e.get("optional"))]
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
    if cfg["data"] == SYNTHETIC:
        from amcfd.options import load_options

        return tuple(dict(load_options(file)["datasets"][key]) for file, key in SYNTHETIC_SETS)
    root, images = str(Path(cfg["data"]["root"]).resolve()), cfg["data"].get("images")
    limit = {"max_images": images} if images else {}
    return ({"type": "NoisyFolder", "root": str(Path(root) / "noisy"), **limit},
            {"type": "PairedFolder", "root": root, **limit})


def rows_of(entry: dict) -> dict:
    """{label: method overrides} of an entry (one row named after it by default)."""
    return dict(entry.get("rows") or {entry["name"]: {}})


def stage_options(cfg: dict, entry: dict) -> dict:
    """A trained entry's option dict: its option file, the benchmark's training images (keeping the file's crop,
    batch and loader settings), no validation, quiet console, then ``budget`` and the entry's ``set``. The
    checkpoints it starts from or distils are linked by the pipeline (``stages``)."""
    from amcfd.data.folders import training_set_on
    from amcfd.options import apply_overrides, load_options

    opt = load_options(entry["train"])
    opt["device"] = cfg["device"]
    train, _ = dataset_entries(cfg)
    if not cfg.get("datasets"):          # the benchmark's images: keep the file's crops, batch and loader
        train = training_set_on(train, opt.get("datasets", {}).get("train", {}), FOLDER_SAMPLING)
    opt["datasets"] = {"train": train}
    opt["val"] = {**opt.get("val", {}), "val_freq": 0}
    opt["logger"] = {**opt.get("logger", {}), "use_tb_logger": False, "progress_bar": True}
    opt.get("path", {}).pop("pretrain_network", None)
    if entry.get("teacher"):
        opt["method"].setdefault("teacher", {}).pop("checkpoint", None)
    overrides = [f"{k}={_yaml_value(v)}" for k, v in {**cfg["budget"], **(entry.get("set") or {})}.items()]
    opt = apply_overrides(opt, overrides)
    saves = opt.setdefault("logger", {}).get("save_checkpoint_freq", 0)
    if not saves or opt["train"]["total_iter"] % saves:          # the final step is saved
        opt["logger"]["save_checkpoint_freq"] = opt["train"]["total_iter"]
    return opt


def stages(cfg: dict) -> list:
    """The benchmark's trained entries as pipeline stages (engine/pipeline.py): ``from`` starts from an earlier
    stage's final checkpoint, ``teacher`` distils it."""
    from amcfd.engine.pipeline import Stage

    return [Stage(entry["name"], stage_options(cfg, entry), starts_from=entry.get("from"), teacher=entry.get("teacher"))
            for entry in cfg["methods"] if entry.get("train")]


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def training_images(root: str | None) -> dict:
    """{relative path: [size, sha256]} of the images of a folder training set's ``root`` (engine.runs.files_digest,
    what amcfd-denoise's stages hash too), so a stage trained on other images is never kept; {} for generated
    data (no root)."""
    from amcfd.data.imageio import list_images
    from amcfd.engine.runs import files_digest

    return files_digest(list_images(root), Path(root)) if root and Path(root).is_dir() else {}


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
        self.pipeline = None                         # the trained entries' stages, planned when the run starts

    def forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, list) and name in self.force)

    def save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.state_file)

    def run(self) -> dict:
        from amcfd.engine.pipeline import Pipeline

        root = dataset_entries(self.cfg)[0].get("root")
        self.pipeline = Pipeline(self.work / "experiments", stages(self.cfg), training_images(root), source=root,
                                 defer_errors=True)
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
                self.checkpoints[name] = self.train(entry)     # the pipeline links the stages by name
            elif entry.get("checkpoint"):        # a path, or a released model's name (fetched once)
                self.checkpoints[name] = Path(resolve_checkpoint(entry["checkpoint"]))
        except Exception as exc:                 # noqa: BLE001 - a failed method is reported, the others go on
            for label in rows_of(entry):
                self.fail(label, entry, exc)
            return
        for label, overrides in rows_of(entry).items():
            info = {"kind": "classical" if entry.get("classical") else "imported" if entry.get("checkpoint")
                    else "trained", "entry": name, "method": overrides, "note": entry.get("note", "")}
            info.update({k: entry[k] for k in ("teacher", "longer_of") if entry.get(k)})
            try:
                if entry.get("classical"):
                    settings = {**(entry.get("params") or {}), **overrides}     # 'params' of a row: its size
                    fn = CLASSICAL[entry["classical"]]
                    self.score(label, {**info, "filter": settings},
                               lambda fn=fn, settings=settings: (lambda x: fn(x, **settings), None))
                else:
                    checkpoint = self.checkpoints[name]
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
        """Run the entry's stage through the pipeline (reused when the same work finished before, unless forced);
        a stage trained now is recorded for the report, and the folders of its earlier identities are removed."""
        import shutil

        name = entry["name"]
        checkpoint = self.pipeline.run_stage(name, force=self.forced(name))
        trainer, minutes = self.pipeline.plan[name].ran["trainer"], self.pipeline.plan[name].ran["minutes"]
        if trainer is None:
            return checkpoint
        stage = {"steps": trainer.iteration, "minutes": round(minutes, 2), "commit": git_commit()}
        if trainer.loss_watch is not None and trainer.loss_watch.message:
            stage["warning"] = trainer.loss_watch.message
        if trainer.auto_choices:
            from amcfd.noise.auto import auto_summary

            stage["auto"] = auto_summary(trainer.auto_choices)
        self.state.setdefault("stages", {})[name] = stage
        self.retrained.add(name)
        self.save_state()
        for folder in self.pipeline.superseded(name):
            shutil.rmtree(folder, ignore_errors=True)
        return checkpoint

    def denoiser(self, checkpoint: Path, overrides: dict, network: dict | None):
        """(denoise_fn, method) as valid.py builds them from the checkpoint and the row's method overrides."""
        from amcfd.engine.inference import build_denoiser
        from amcfd.options import validate

        overrides = dict(overrides)
        opt = {"name": "benchmark", "device": self.cfg["device"], "test": overrides.pop("test", None) or {},
               "method": overrides, "path": {"pretrain_network": str(checkpoint)}}
        if network:
            opt["network"] = network
        method, fn = build_denoiser(validate(opt, "valid"))
        return fn, method

    def score(self, label: str, info: dict, build, retrained: bool = False) -> dict:
        """Evaluate one row on the pairs (kept when scored before on the same inputs): metrics per image and
        mean, ms per image, parameters and GFLOPs per image (the first image's size)."""
        from amcfd.engine.inference import build_dataset, evaluate, method_device

        _, eval_set = dataset_entries(self.cfg)
        checkpoint = info.get("checkpoint")
        stamp = Path(checkpoint).stat().st_mtime if checkpoint and Path(checkpoint).is_file() else None
        key = digest({**info, "eval": eval_set, "metrics": self.cfg["metrics"], "stamp": stamp})
        old = self.state["rows"].get(label)
        if old and old.get("key") == key and "failed" not in old and not retrained and not self.forced(label):
            return old
        fn, method = build()
        dataset, loader_opts = build_dataset(eval_set, "benchmark eval")
        device = method_device(method) if method is not None else torch.device("cpu")
        bar = self._bar(label, len(dataset))
        result = evaluate(fn, dataset, loader_opts, self.cfg["metrics"], device,
                          on_image=(lambda item, out: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        result.pop("visuals")
        row = {**info, "key": key, "n": result["n"], "commit": git_commit(), "threads": torch.get_num_threads(),
               "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,     # others' work while timing
               **{report_key(m): result[m] for m in self.cfg["metrics"]},
               "ms_per_image": 1000 * result["sec_per_image"],
               "per_image": {k: {report_key(m): v[m] for m in v} for k, v in result["per_image"].items()}}
        if method is not None:
            from amcfd.analysis.cost import gflops, parameter_count

            row["params"] = parameter_count(method.net)
            row["gflops"] = gflops(fn, dataset[0]["noisy"][None].to(device))
        self.state["rows"][label] = row
        self.save_state()
        return row

    def _bar(self, label: str, total: int):
        if not self.progress:
            return None
        from amcfd.progress import progress_bar

        return progress_bar(total=total, desc=f"{label} (eval)", leave=False)
