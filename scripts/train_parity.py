"""Step-by-step training parity: our training against the authors' code, from the same weights and batches.

    python scripts/train_parity.py --authors-code CHECKOUT --method amsnet --net nafnet --steps 20
    python scripts/train_parity.py --authors-code CHECKOUT --method apbsn --authors-python VENV/bin/python
    python scripts/train_parity.py --authors-code APRRD_CHECKOUT --method aprrd --batch 4 --crop 64

Both codes start from the same random weights (ours, built from our option file; loaded into theirs under
their key names, and their final weights read back through our importers, amcfd/hub/importers.py), see the
same fixed batches (synthetic noisy crops in [0, 1], at the size of their config; --batch/--crop shrink them),
float32 on the CPU, deterministic algorithms, the global RNG seeded with --seed + step before every step in
both codes. Ours: the option file's network, method and train section (optimiser, learning rate, schedule)
as engine/trainer.py builds them. Theirs: their configuration file and classes, in a process of its own
(--authors-python), importing nothing of ours; their repository is read at run time, never copied here.
Printed: one row per step (their loss, ours, relative difference, the learning rate each code used), then
``parity METHOD: N steps, max loss rel diff X, max weight rel diff Y`` (weights: the largest over parameters
of |ours - theirs| / |theirs|, L2 norms). Exit 0 when X <= 1e-4 and Y <= 1e-3, 1 otherwise, 2 on bad
arguments or when their code cannot run.

The same tool runs the two codes for as many steps as a benchmark row trained, on that set's images:
    python scripts/train_parity.py --authors-code AP-BSN_CHECKOUT --method apbsn --steps 1255 \
        --images ../shared/data/cc15/noisy --preset small --fit-schedule --save results/parity/apbsn
--images: random crops of those images (seeded, no flips; the same crops in both processes) instead of synthetic
ones; --preset: our networks at that preset and theirs built at the same widths (their config's or class's
default patched in their process: AP-BSN and AM-BSN ``bsn_base_ch``/``bsn_num_module``, AT-BSN's and APRRD's
``ATBSN`` ``mid_channels``; their distillation students have fixed widths, so atbsn and aprrd need --steps2 0,
the first stage only); --fit-schedule: our option file's schedule fitted to --steps as a budgeted run fits it
(engine/trainer.fit_schedule), and their code's learning rate set to the same value before each step (their
scheduler still steps, its value replaced); --save DIR: both final networks as our checkpoints, DIR/authors.pth
and DIR/ours.pth, which a benchmark entry's ``checkpoint`` scores on the set (options/bench/parity_steps.yml).

Methods, and what runs in the authors' process:
  amsnet (lll143653/amsnet, configs/restormer.yaml or nafnet.yaml, --net; ours options/train/amsnet.yml or
    amsnet_nafnet.yml): their ``ImageDenoiseEnd2End`` around ``MultiMaskPdDn`` (AMSNet-B, ``FirstPdMaskLoss``
    L1 at PD 5) from the config, its ``training_step`` and ``configure_optimizers`` (AdamW; the cosine
    schedule stepped once per epoch of ``max_len / batch_size`` steps, as Lightning steps a scheduler given
    without an interval). Patched: the modules of bench_authors_speed.py are stubbed (Lightning, loguru,
    joblib, torchmetrics, torchvision, matplotlib; einops is needed) and the wrapper's ``log`` is a no-op.
    Their masks come from ``torch.randint`` on the global RNG, as ours: seeded alike, the draws are equal.
    Their code has no AMSNet-P (smoothness fine-tuning) stage, so only AMSNet-B is compared.
  apbsn (wooseoklee4/AP-BSN, conf/APBSN_SIDD.yaml; ours options/train/apbsn.yml): their ``APBSN`` model,
    their ``Loss`` ("1*self_L1") on the batch x 255 (their data range), the optimiser of their trainer's
    ``_set_one_optimizer`` (Adam); their step schedule and warm-up act at epoch ends only, outside the steps
    run. Patched: nothing in the model; ``torch.utils.tensorboard`` is stubbed if missing (their trainer's
    module imports it). Both losses are in [0, 255] units (ours with ``loss_in_value_range``, its default).
  atbsn (hnmizuho/AT-BSN, codes/options/train/train_atbsn.yml then distill_atbsn.yml; ours atbsn.yml then
    atbsn_distill.yml): their ``ATBSN_Model`` built from the config with ``pretrain_model`` = our initial weights,
    its ``feed_data`` (batch x 255), ``optimize_parameters`` and ``update_learning_rate`` (Adam, cosine per step);
    then their ``ATBSN_D_Model`` with ``pretrain_model`` = our trained AT-BSN (the same teacher in both codes),
    its student first given our initial student weights (their ``load`` then copies the teacher into all but
    ``nin_*`` and ``dec1``, as ours). Rows 1..N are AT-BSN, N+1..2N the distillation; the weights of both
    networks are compared. Patched: nothing; the option dict gets ``dist`` false, ``gpu_ids`` none, ``usage``
    train.
  aprrd (HYK2017/APRRD, NBSN_1.02M/codes: config.json, preparation.py; ours apr.yml then aprrd.yml): their
    ``initialize_models`` (ATBSN, N_BSN, ``Inf_T_elements`` around the same ATBSN) given our initial weights,
    ``setup_training`` (Adam 3e-4, betas (0.9, 0.999), ``CustomCosineLR`` over their 400k / 200k iterations) and
    ``train`` itself, twice: the BSN with APR and ``L_APR``, then the NBSN with the recharge and ``L_RD``, whose
    teacher file (``BSN_<name>.pth`` in their ``trained_path``) is replaced by our trained AT-BSN between the two
    (the same teacher in both codes). Their dataset is a stand-in whose ``get_dataloader`` yields our batches
    (in [0, 1], their range), seeding the global RNG before each step; their RD loop crops the centre
    NBSN-patch of each batch, so ours are zero-padded by their margin ((256 - 128) / 2) and the crop returns
    them. Losses are read by a forward hook on ``L_APR`` / ``L_RD``, the weights from the files ``train`` saves.
    Rows 1..N are APR, N+1..2N RD. Patched: ``setup_device`` is not called (it calls ``torch.cuda.set_device``),
    config ``gpu_use`` is 0 as it would set without a GPU; ``total_iter`` (only after the schedulers are made),
    ``batch_size``, ``patch_size`` and ``trained_path`` follow the run; ``torchvision`` is stubbed (their unused
    loaders import it). No random draw needed patching: APR's ``torch.randint`` over their 72 window pairs and the
    recharge's ``torch.randint`` are ours, draw for draw (ops/replace.py enumerates the pairs in their order);
    the recharger's ``torch.randperm`` (``generate_subset_mask``, percentage 1) keeps every pixel, and nothing
    draws after it in a step. Crops must be multiples of 32 (their networks have no padding).
  ambsn (wam730/AM-BSN, config/SIDD.yaml; ours ambsn.yml): the repository publishes no training driver ("As soon
    as our paper is accepted, we will upload the training code", README) but does publish the training pieces
    the driver would call: ``set_optimizer`` (Adam 2e-4), ``Loss`` ("1*self_L1", against the noisy input),
    ``_run_step`` and ``_adjust_lr`` (util/model_need_tools.py), and the ``BSN`` wrapper (model/get_model.py: PD
    5, pad 2, no shuffle) around ``AMBSN``; those run here, as apbsn, on the batch x 255. Patched:
    ``model.restormer_arch`` (deleted upstream, still imported by model/AMBSN.py for ``DC_branchl2_attn``, which
    AMBSN never builds) is stubbed. Their step schedule acts at the end of epochs 8, 16, 24 only, outside the
    steps run. Crops must be multiples of 5.

Masked convolutions (AP-BSN's centre-masked conv) are compared as the network uses them, weight x mask: their
forward zeroes the masked taps of the parameter in place, ours multiplies by the mask and leaves the (unused)
taps as they were.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
METHODS = ("amsnet", "apbsn", "ambsn", "atbsn", "aprrd")
NETS = {"restormer": ("Restormer", "restormer", "amsnet.yml"),        # --net: our arch, their config, ours
        "nafnet": ("NAFNetBase", "nafnet", "amsnet_nafnet.yml")}
MARKERS = {"amsnet": "codes/model.py", "apbsn": "src/model/APBSN.py", "ambsn": "util/model_need_tools.py",
           "atbsn": "codes/models/atbsn_d_model.py", "aprrd": "NBSN_1.02M/codes/preparation.py"}
APRRD_CODES = "NBSN_1.02M/codes"
# two-stage methods: our second option file, its network type, and how their final state maps to ours
SECOND = {"atbsn": ("atbsn_distill.yml", "ATBSNStudent"), "aprrd": ("aprrd.yml", "NBSN")}
LOSS_TOL, WEIGHT_TOL = 1e-4, 1e-3
MAX_ROWS = 40            # of the per-step table (a longer run prints every k-th step)


class ArgumentError(Exception):
    pass


class Result:
    """One code's run: the loss and learning rate of every step, and the final weights (our key names)."""

    def __init__(self, losses: list, lrs: list, weights: dict):
        self.losses, self.lrs, self.weights = list(losses), list(lrs), dict(weights)


# ----------------------------------------------------------------------------- shared by both processes
def deterministic(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def train_steps(step: Callable, batches, seed: int) -> tuple[list, list]:
    """Run ``step(i, batch) -> (loss, lr)`` over ``batches``, the global RNG seeded with seed + i before each."""
    import torch

    losses, lrs = [], []
    for i, batch in enumerate(batches):
        torch.manual_seed(seed + i)
        loss, lr = step(i, batch)
        losses.append(float(loss))
        lrs.append(float(lr))
    return losses, lrs


def follow_lr(optimiser, lrs: list | None, i: int) -> None:
    """--fit-schedule, in the authors' process: step ``i`` at the learning rate our fitted schedule gives it
    (their scheduler still steps; its value is replaced before every step)."""
    if not lrs:
        return
    for one in optimiser.values() if isinstance(optimiser, dict) else [optimiser]:   # AM-BSN's: a dict by module
        for group in one.param_groups:
            group["lr"] = lrs[i]


def optimiser_step(loss_fn: Callable, optimiser, after: Callable | None = None, lrs: list | None = None) -> Callable:
    """A training step: zero the gradients, ``loss_fn(i, batch)``, backward, optimiser step, ``after(i)``."""
    def step(i, batch):
        follow_lr(optimiser, lrs, i)
        lr = optimiser.param_groups[0]["lr"]
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(i, batch)
        loss.backward()
        optimiser.step()
        if after is not None:
            after(i)
        return loss.detach(), lr
    return step


class Crops:
    """--images batches, cut on demand (both processes, the same crops): step ``i`` stacks the ``side`` x ``side``
    crops of ``images`` at (image, top, left) ``where[i]``."""

    def __init__(self, images: list, where, side: int):
        self.images, self.where, self.side = images, where, side

    def __len__(self):
        return len(self.where)

    def __getitem__(self, i):
        import torch

        s = self.side
        return torch.stack([self.images[k][:, y:y + s, x:x + s] for k, y, x in self.where[i].tolist()])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def portable(self) -> dict:
        return {"images": self.images, "where": self.where, "side": self.side}


def batches_of(portable):
    """A job's batches: a list of tensors, or the ``Crops.portable`` form."""
    return Crops(**portable) if isinstance(portable, dict) else portable


# ----------------------------------------------------------------------------- the comparison
def relative(a: float, b: float) -> float:
    """|a - b| / |b| (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / abs(b) if b != 0 else math.inf


def compare(authors: Result, ours: Result) -> dict:
    """Per-step loss relative differences and the largest weight relative difference (L2, per tensor)."""
    import torch

    n = min(len(authors.losses), len(ours.losses))
    rows = [(i + 1, authors.losses[i], ours.losses[i], relative(ours.losses[i], authors.losses[i]),
             authors.lrs[i] if i < len(authors.lrs) else math.nan, ours.lrs[i] if i < len(ours.lrs) else math.nan)
            for i in range(n)]
    max_loss = max((r[3] for r in rows), default=math.inf)
    if len(authors.losses) != len(ours.losses) or not rows:
        max_loss = math.inf
    rels = {}
    for key in sorted(set(authors.weights) | set(ours.weights)):
        a, o = authors.weights.get(key), ours.weights.get(key)
        if a is None or o is None or a.shape != o.shape:
            rels[key] = math.inf
            continue
        a, o = a.double(), o.double()
        diff, norm = float(torch.linalg.vector_norm(o - a)), float(torch.linalg.vector_norm(a))
        rels[key] = 0.0 if diff == 0 else (diff / norm if norm > 0 else math.inf)
    worst = max(rels, key=rels.get) if rels else None
    max_weight = rels[worst] if rels else math.inf
    ok = max_loss <= LOSS_TOL and max_weight <= WEIGHT_TOL
    return {"rows": rows, "steps": n, "max_loss": max_loss, "max_weight": max_weight, "worst": worst, "ok": ok}


def effective(weights: dict) -> dict:
    """The weights as the network uses them: a masked conv's ``weight`` times its ``mask`` buffer (the taps
    the mask zeroes never act; the authors' masked convs zero them in place at every forward, ours do not)."""
    return {k: v * weights[k[:-len("weight")] + "mask"] if k.endswith(".weight") and k[:-len("weight")] + "mask"
            in weights else v for k, v in weights.items()}


def report_lines(method: str, cmp: dict) -> list[str]:
    """The per-step table (markdown) and the closing line."""
    lines = ["| step | authors' loss | our loss | rel diff | authors' lr | our lr |", "|---|---|---|---|---|---|"]
    rows = cmp["rows"]
    if len(rows) > MAX_ROWS:                         # a long run: every k-th step, and the last
        k = math.ceil(len(rows) / MAX_ROWS)
        rows = rows[::k] + ([rows[-1]] if (len(rows) - 1) % k else [])
    for step, a, o, rel, lr_a, lr_o in rows:
        lines.append(f"| {step} | {a:.8g} | {o:.8g} | {rel:.2e} | {lr_a:.6g} | {lr_o:.6g} |")
    if cmp["worst"] is not None and cmp["max_weight"] > 0:
        lines.append(f"largest weight difference: {cmp['worst']}")
    lines.append(f"parity {method}: {cmp['steps']} steps, max loss rel diff {cmp['max_loss']:.3e}, "
                 f"max weight rel diff {cmp['max_weight']:.3e}")
    return lines


def finish(method: str, authors: Result, ours: Result, out: Callable = print) -> tuple[int, list[str]]:
    """Compare, print the table and the last line; the exit code (0 parity, 1 not)."""
    cmp = compare(Result(authors.losses, authors.lrs, effective(authors.weights)),
                  Result(ours.losses, ours.lrs, effective(ours.weights)))
    lines = report_lines(method, cmp)
    for line in lines:
        out(line)
    return (0 if cmp["ok"] else 1), lines


# ----------------------------------------------------------------------------- our side
def make_batches(steps: int, batch: int, crop: int, seed: int) -> list:
    """Fixed noisy crops in [0, 1]: smooth random images plus Gaussian noise (sigma 0.06), one per step."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        coarse = torch.rand(batch, 3, max(2, crop // 16), max(2, crop // 16), generator=g)
        clean = F.interpolate(coarse, size=(crop, crop), mode="bicubic", align_corners=False).clamp(0.05, 0.95)
        out.append((clean + 0.06 * torch.randn(clean.shape, generator=g)).clamp(0, 1))
    return out


def image_crops(folder: Path, steps: int, batch: int, crop: int, seed: int) -> Crops:
    """Random ``crop`` crops of the images in ``folder`` in [0, 1], ``batch`` per step (no flips: the same crops in
    both codes); the draw is seeded with ``seed``. Images smaller than the crop are skipped."""
    import torch

    from amcfd.data.imageio import list_images, read_image, to_tensor

    images = [to_tensor(read_image(p)[0][..., :3]) for p in list_images(folder)]
    images = [im for im in images if min(im.shape[-2:]) >= crop and im.shape[0] == 3]
    if not images:
        raise ArgumentError(f"--images {folder}: no RGB image of at least {crop} x {crop} pixels")
    g = torch.Generator().manual_seed(seed)
    where = torch.zeros(steps, batch, 3, dtype=torch.long)
    for i in range(steps):
        for b in range(batch):
            k = int(torch.randint(len(images), (1,), generator=g))
            h, w = images[k].shape[-2:]
            where[i, b] = torch.tensor([k, int(torch.randint(h - crop + 1, (1,), generator=g)),
                                        int(torch.randint(w - crop + 1, (1,), generator=g))])
    return Crops(images, where, crop)


def training_batches(args, steps: int, batch: int, crop: int, seed: int):
    """--images crops, or the synthetic ``make_batches``."""
    if args.images is not None:
        return image_crops(args.images, steps, batch, crop, seed)
    return make_batches(steps, batch, crop, seed)


def portable(batches):
    return batches.portable() if isinstance(batches, Crops) else batches


def our_options(name: str, preset: str | None = None) -> dict:
    """Our option file, every default filled in; ``preset``: its network's (--preset)."""
    from amcfd.options import load_options, resolved_options

    opt = load_options(REPO / "options" / "train" / name)
    if preset:
        opt["network"]["preset"] = preset
    return resolved_options(opt)


def as_run(opt: dict, args, steps: int) -> dict:
    """Our options for this run: --fit-schedule (the schedule fitted to ``steps`` as a budgeted run fits it,
    engine/trainer.fit_schedule)."""
    from amcfd.engine.trainer import fit_schedule

    if args.fit_schedule:
        fit_schedule(opt["train"], steps)
    return opt


def schedule_lrs(opt: dict, steps: int) -> list:
    """The learning rate of each of ``steps`` steps under our (fitted) schedule, for the authors' process."""
    from amcfd.engine.trainer import lr_factor

    t = opt["train"]
    return [t["lr"] * lr_factor(i, t) for i in range(steps)]


def preset_widths(opt: dict, preset: str | None) -> dict | None:
    """--preset: the constructor arguments of our network at that preset, which the authors' process builds theirs
    with (None: their config's own size)."""
    from amcfd.registry import ARCHS

    return None if preset in (None, "published") else dict(ARCHS.get(opt["network"]["type"]).PRESETS[preset])


def initial_weights(opt: dict, seed: int) -> dict:
    """Our network's random initial weights (option ``network``, torch seeded with ``seed``)."""
    import torch

    from amcfd.archs import build_arch

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_arch(opt["network"]).state_dict().items()}


def train_ours(opt: dict, init: dict, batches, seed: int, loss_scale: float = 1.0) -> Result:
    """Our method trained on ``batches`` from ``init``: the optimiser and schedule of engine/trainer.py."""
    import torch

    from amcfd.archs import build_arch
    from amcfd.engine.inference import build_method
    from amcfd.engine.trainer import lr_factor

    net = build_arch(opt["network"])
    net.load_state_dict(init)
    method = build_method(opt, net).train()
    method.on_train_start()                                 # e.g. a student initialised from its teacher
    t = opt["train"]
    params = [p for p in net.parameters() if p.requires_grad]
    optim_cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[t["optim"]]
    optimiser = optim_cls(params, lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: lr_factor(it, t))

    def loss_fn(i, batch):
        return sum(method({"noisy": batch}).values())

    losses, lrs = train_steps(optimiser_step(loss_fn, optimiser, lambda i: scheduler.step()), batches, seed)
    return Result([v * loss_scale for v in losses], lrs, {k: v.detach().clone() for k, v in net.state_dict().items()})


# ----------------------------------------------------------------------------- the cases
class Case:
    """Our option file and network type, their config's batch and crop, and our loss's scale to theirs."""

    def __init__(self, options: str, arch: str, batch: int, crop: int, loss_scale: float = 1.0):
        self.options, self.arch, self.batch, self.crop, self.loss_scale = options, arch, batch, crop, loss_scale


def case(method: str, net: str | None, code: Path) -> Case:
    if method == "amsnet":
        arch, config, options = NETS[net or "restormer"]
        data = _yaml(code / "configs" / f"{config}.yaml")["data"]
        return Case(options, arch, data["batch_size"], data["train_dataset"]["init_args"]["crop_size"])
    if method == "atbsn":
        data = _yaml(code / "codes" / "options" / "train" / "train_atbsn.yml")["datasets"]["train"]
        return Case("atbsn.yml", "ATBSN", data["batch_size"], data["crop_size"])
    if method == "aprrd":
        cfg = _aprrd_config(code)
        return Case("apr.yml", "ATBSN", cfg["batch_size"]["Training"], cfg["patch_size"]["BSN"])
    if method == "ambsn":
        cfg = _yaml(code / "config" / "SIDD.yaml")["training"]
        return Case("ambsn.yml", "AMBSN", cfg["batch_size"], cfg["dataset_args"]["crop_size"][0])
    cfg = _yaml(code / "conf" / "APBSN_SIDD.yaml")["training"]
    return Case("apbsn.yml", "DBSNl", cfg["batch_size"], cfg["dataset_args"]["crop_size"][0])


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _aprrd_config(code: Path) -> dict:
    import json

    return json.loads((code / APRRD_CODES / "config.json").read_text())


def second_case(method: str, code: Path) -> tuple[int, int]:
    """The second stage's batch and crop in their config (the distillation's)."""
    if method == "aprrd":
        cfg = _aprrd_config(code)
        return cfg["batch_size"]["Training"], cfg["patch_size"]["NBSN"]
    data = _yaml(code / "codes" / "options" / "train" / "distill_atbsn.yml")["datasets"]["train"]
    return data["batch_size"], data["crop_size"]


def to_authors(method: str, init: dict) -> dict:
    """Our initial weights under the authors' names: their Lightning module's (amsnet), their APBSN's."""
    prefix = "net.dn.branches.0." if method == "amsnet" else "bsn."
    return {prefix + k: v for k, v in init.items()}


def from_authors(method: str, arch: str, state: dict) -> dict:
    """Their final weights (their checkpoint layout) under our names, through our importers."""
    from amcfd.archs import convert_state_dict
    from amcfd.hub.importers import denoiser_state_dict

    if method == "amsnet":
        return denoiser_state_dict(state, arch, 0)
    return convert_state_dict(arch, state)


# ----------------------------------------------------------------------------- the authors' process
def _load_sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _authors_amsnet(job: dict) -> dict:
    import functools


    code = Path(job["code"])
    _load_sibling("bench_authors_speed")._stub_modules()
    sys.path.insert(0, str(code))
    import codes.loss
    import codes.model

    cfg = _yaml(code / "configs" / f"{job['config']}.yaml")
    net_args = dict(cfg["model"]["net"]["init_args"])
    loss_cfg = net_args.pop("loss_fn")
    loss_fn = getattr(codes.loss, loss_cfg["class_path"].rsplit(".", 1)[1])(**loss_cfg["init_args"])
    optim_cfg, sched_cfg = cfg["model"]["optimizer"], cfg["model"]["scheduler"]
    optimiser = functools.partial(_torch_class(optim_cfg["class_path"]), **_floats(optim_cfg["init_args"]))
    scheduler = functools.partial(_torch_class(sched_cfg["class_path"]), **_floats(sched_cfg["init_args"]))
    module = codes.model.ImageDenoiseEnd2End(net=codes.model.MultiMaskPdDn(loss_fn=loss_fn, **net_args),
                                             optimizer=optimiser, scheduler=scheduler)
    module.log = lambda *args, **kwargs: None
    module.load_state_dict(job["init"], strict=True)
    module.train()
    conf = module.configure_optimizers()
    data = cfg["data"]
    epoch = math.ceil(data["train_dataset"]["init_args"]["max_len"] / data["batch_size"])

    def after(i):
        if (i + 1) % epoch == 0:
            conf["lr_scheduler"].step()

    losses, lrs = train_steps(optimiser_step(lambda i, b: module.training_step({"input": b}, i), conf["optimizer"],
                                             after, job.get("lrs")), batches_of(job["batches"]), job["seed"])
    return {"losses": losses, "lrs": lrs, "state": {"state_dict": module.state_dict()}}


def _authors_apbsn(job: dict) -> dict:
    import torch

    code = Path(job["code"])
    sys.path.insert(0, str(code))
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = object
        sys.modules["torch.utils.tensorboard"] = stub
    from src.loss import Loss
    from src.model import get_model_class
    from src.trainer.base import BaseTrainer

    cfg = _yaml(code / "conf" / "APBSN_SIDD.yaml")
    if job.get("widths"):                                  # --preset: our DBSNl's widths
        cfg["model"]["kwargs"].update(bsn_base_ch=job["widths"]["base_ch"],
                                      bsn_num_module=job["widths"]["num_module"])
    model = get_model_class(cfg["model"]["type"])(**cfg["model"]["kwargs"])
    model.load_state_dict(job["init"], strict=True)
    model.train()
    train_cfg = cfg["training"]
    holder = types.SimpleNamespace(train_cfg=train_cfg)
    optimiser = BaseTrainer._set_one_optimizer(holder, train_cfg["optimizer"], model.parameters(),
                                               float(train_cfg["init_lr"]))
    loss = Loss(train_cfg["loss"], train_cfg["tmp_info"])

    def loss_fn(i, batch):
        x = batch * 255.0                                  # their datasets give [0, 255] as real_noisy
        losses, _ = loss([x], {"recon": model(x)}, {"real_noisy": x}, {"denoiser": model}, ratio=0.0)
        return sum(v.mean() for v in losses.values())      # (ratio weights only "r" terms; self_L1 has none)

    losses, lrs = train_steps(optimiser_step(loss_fn, optimiser, lrs=job.get("lrs")), batches_of(job["batches"]),
                              job["seed"])
    return {"losses": losses, "lrs": lrs, "state": {"model_weight": {"denoiser": model.state_dict()}}}


def _authors_ambsn(job: dict) -> dict:
    """Their ``BSN`` wrapper (model/get_model.py) around ``AMBSN`` from config/SIDD.yaml, their ``set_optimizer``,
    ``Loss`` and ``_run_step`` (util/model_need_tools.py: forward, loss means, backward, step, zero_grad), then
    ``_adjust_lr`` after each step, as epoch 1 of an epoch of len(batches) iterations (their step schedule acts at
    the end of epochs 8, 16, 24 only). The repository has no training driver: those are the pieces it publishes."""
    code = Path(job["code"])
    sys.path.insert(0, str(code))
    if not (code / "model" / "restormer_arch.py").is_file():      # deleted upstream, still imported by AMBSN.py
        stub = types.ModuleType("model.restormer_arch")           # for DC_branchl2_attn, which AMBSN never builds
        stub.DTB = None
        sys.modules["model.restormer_arch"] = stub
    from model.get_model import BSN
    from util import model_need_tools as tools
    from util.loss import Loss

    cfg = _yaml(code / "config" / "SIDD.yaml")
    if job.get("widths"):                                  # --preset: our AMBSN's width
        cfg["model"]["kwargs"]["bsn_base_ch"] = job["widths"]["base_ch"]
    model = BSN(**cfg["model"]["kwargs"])
    model.load_state_dict(job["init"], strict=True)
    model.train()
    train_cfg, module = cfg["training"], {"denoiser": model}
    optimiser = tools.set_optimizer(module, train_cfg)
    loss = Loss(train_cfg["loss"], train_cfg["tmp_info"])
    run_cfg = {"gpu": "cpu", "model_input": cfg["model_input"]}
    batches = batches_of(job["batches"])
    n = len(batches)
    data = iter({"real_noisy": b * 255.0, "noisy": b * 255.0} for b in batches)   # their datasets: [0, 255]

    def step(i, batch):
        follow_lr(optimiser, job.get("lrs"), i)
        lr, totals = tools._get_current_lr(optimiser), {"count": 0}
        tools._run_step({"dataset": data}, module, optimiser, loss, 1, i + 1, n, train_cfg["max_epoch"], totals,
                        run_cfg)
        tools._adjust_lr(optimiser, i + 1, 1, n, train_cfg)
        return sum(v for k, v in totals.items() if k != "count"), lr

    losses, lrs = train_steps(step, batches, job["seed"])
    return {"losses": losses, "lrs": lrs, "state": {"model_weight": {"denoiser": model.state_dict()}}}


def _authors_atbsn(job: dict) -> dict:
    """Their ATBSN_Model (train_atbsn.yml), then ATBSN_D_Model (distill_atbsn.yml) on the teacher ``job`` gives
    (not run when there are no second-stage batches)."""
    import functools

    import torch

    code = Path(job["code"])
    sys.path[:0] = [str(code), str(code / "codes")]
    import codes.models.atbsn_model as atbsn_model
    from codes.models.atbsn_d_model import ATBSN_D_Model
    from codes.models.atbsn_model import ATBSN_Model

    if job.get("widths"):           # --preset: the ATBSN their model builds, at our width (patched, this process)
        atbsn_model.ATBSN = functools.partial(atbsn_model.ATBSN, mid_channels=job["widths"]["mid_channels"])

    def build(cls, name: str, weights: dict):
        opt = _yaml(code / "codes" / "options" / "train" / name)
        path = Path(job["tmp"]) / f"authors_{name}.pth"
        torch.save(weights, path)
        opt.update(dist=False, gpu_ids=None, usage="train", test=opt.get("test"))
        opt["path"].update(pretrain_model=str(path), strict_load=True)
        return cls(opt), opt

    def run(model, opt, batches, start, lrs):
        def step(i, batch):
            follow_lr(model.optimizers[0], lrs, i)
            lr = model.get_current_learning_rate()
            model.feed_data({"gt": batch * 255.0, "noisy": batch * 255.0})     # their datasets give [0, 255]
            model.optimize_parameters(start + i + 1)
            model.update_learning_rate(start + i + 1, warmup_iter=opt["train"]["warmup_iter"])
            return model.log_dict["l_all"], lr
        return train_steps(step, batches, job["seed"] + start)

    teacher, opt = build(ATBSN_Model, "train_atbsn.yml", job["init"])
    losses, lrs = run(teacher, opt, batches_of(job["batches"]), 0, job.get("lrs"))
    if not job.get("batches2"):
        return {"losses": losses, "lrs": lrs, "state": {"teacher": teacher.MoBanNet.state_dict()}}
    student, opt = build(ATBSN_D_Model, "distill_atbsn.yml", job["teacher"])
    student.MoBanNet.module.nbsn.load_state_dict(job["student"])   # their N_BSN's own init for what is not copied
    student.load()                                                   # then their teacher -> student copy
    more, more_lrs = run(student, opt, batches_of(job["batches2"]), len(losses), job.get("lrs2"))
    return {"losses": losses + more, "lrs": lrs + more_lrs,
            "state": {"teacher": teacher.MoBanNet.state_dict(), "student": student.MoBanNet.state_dict()}}


def _authors_aprrd(job: dict) -> dict:
    """Their preparation.py: ``initialize_models`` and ``setup_training`` (Adam, CustomCosineLR over their config's
    400k / 200k iterations), then ``train`` for the BSN (APR) and for the NBSN (RD), each for len(batches) steps
    (the RD stage not when there are no second-stage batches)."""
    import functools
    import os

    import torch
    import torch.nn.functional as F

    code = Path(job["code"]) / APRRD_CODES
    if "torchvision" not in sys.modules:              # utils/dataloader.py imports it; their loaders are not used
        vision = types.ModuleType("torchvision")
        vision.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": vision, "torchvision.transforms": vision.transforms})
    os.chdir(code)                                    # preparation.py reads ./config.json at import
    sys.path.insert(0, str(code))
    import preparation

    config, cpu, name = preparation.config, torch.device("cpu"), "parity"
    if job.get("widths"):           # --preset: the ATBSN it builds, at our width (patched, this process)
        preparation.ATBSN = functools.partial(preparation.ATBSN, mid_channels=job["widths"]["mid_channels"])
    config["gpu_use"] = 0                              # what their setup_device sets without a GPU (not called:
    bsn_info, nbsn_info = preparation.initialize_models(cpu, [])       # it calls torch.cuda.set_device)
    f, fd = bsn_info[0], nbsn_info[0]
    f.load_state_dict(job["init"], strict=True)
    batches, batches2 = batches_of(job["batches"]), batches_of(job.get("batches2"))
    if batches2:
        fd.load_state_dict(job["student"], strict=True)
    bsn_training, nbsn_training = preparation.setup_training(f, fd)
    margin = (config["patch_size"]["BSN"] - config["patch_size"]["NBSN"]) // 2
    side = batches2[0].shape[-1] if batches2 else config["patch_size"]["NBSN"]
    config.update(trained_path=job["tmp"], total_iter={"BSN": len(batches), "NBSN": len(batches2 or [])},
                  patch_size={"BSN": side + 2 * margin, "NBSN": side})
    config["batch_size"]["Training"] = batches[0].shape[0]

    class Feed:
        """Their dataset: ``get_dataloader`` yields our batches, seeding the global RNG before each step."""

        def __init__(self, batches, optimiser, start, lrs):
            self.batches, self.optimiser, self.start, self.lrs, self.follow = batches, optimiser, start, [], lrs

        def __len__(self):
            return len(self.batches) * self.batches[0].shape[0]

        def get_dataloader(self, batch_size, shuffle):
            return self

        def __iter__(self):
            for i, batch in enumerate(self.batches):
                torch.manual_seed(job["seed"] + self.start + i)
                follow_lr(self.optimiser, self.follow, i)
                self.lrs.append(self.optimiser.param_groups[0]["lr"])
                yield batch

    def run(info, training, batches, start, lrs):
        losses = []
        training[3].register_forward_hook(lambda module, args, out: losses.append(float(out)))
        feed = Feed(batches, training[1], start, lrs)
        preparation.train([feed, name], info, training, cpu)
        return losses, feed.lrs

    losses, lrs = run(bsn_info, bsn_training, batches, 0, job.get("lrs"))
    path = Path(job["tmp"]) / f"BSN_{name}.pth"
    teacher = torch.load(path, weights_only=True)["model_state_dict"]
    if not batches2:
        return {"losses": losses, "lrs": lrs, "state": {"teacher": teacher}}
    torch.save({"model_state_dict": job["teacher"]}, path)        # the same teacher in both codes: ours
    # their RD loop takes the centre NBSN x NBSN crop of each BSN x BSN patch: our batches padded by the margin
    padded = [F.pad(b, (margin, margin, margin, margin)) for b in batches2]
    more, more_lrs = run(nbsn_info, nbsn_training, padded, len(batches), job.get("lrs2"))
    student = torch.load(Path(job["tmp"]) / f"NBSN_{name}.pth", weights_only=True)["model_state_dict"]
    return {"losses": losses + more, "lrs": lrs + more_lrs, "state": {"teacher": teacher, "student": student}}


def _torch_class(path: str):
    import torch

    obj = torch
    for part in path.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _floats(args: dict) -> dict:
    return {k: (float(v) if isinstance(v, str) else v) for k, v in args.items()}


AUTHORS = {"amsnet": _authors_amsnet, "apbsn": _authors_apbsn, "ambsn": _authors_ambsn, "atbsn": _authors_atbsn,
           "aprrd": _authors_aprrd}


def worker(job_path: str, out_path: str) -> int:
    """The authors' side: read the job, train with their code, write losses, learning rates and weights."""
    import torch

    job = torch.load(job_path, weights_only=True)
    job["tmp"] = str(Path(job_path).parent)
    deterministic(job["threads"])
    torch.save(AUTHORS[job["method"]](job), out_path)
    return 0


def run_authors(python: str, job: dict) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.pt", Path(tmp) / "out.pt"
        torch.save(job, job_path)
        proc = subprocess.run([python, str(Path(__file__).resolve()), "--worker", str(job_path), str(out_path)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the authors' process failed (exit {proc.returncode}): {tail}")
        return torch.load(out_path, weights_only=True)


# ----------------------------------------------------------------------------- command line
class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgumentError(message)


def parse(argv) -> argparse.Namespace:
    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors-code", type=Path, required=True, help="a checkout of the method's authors' code")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    p.add_argument("--authors-python", default=sys.executable,
                   help="the Python that runs their code (default: this one)")
    p.add_argument("--net", choices=list(NETS), help="amsnet: the denoiser (default restormer)")
    p.add_argument("--batch", type=int, help="batch size (default: their config's)")
    p.add_argument("--crop", type=int, help="crop side (default: their config's)")
    p.add_argument("--seed", type=int, default=0, help="weights, batches and per-step RNG seeds (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each process (default 1)")
    p.add_argument("--steps2", type=int, help="atbsn, aprrd: steps of the distillation (default --steps; 0: the "
                   "first stage only)")
    p.add_argument("--images", type=Path, help="train on random crops of the images in this folder (e.g. a set's "
                   "noisy/) instead of synthetic noisy crops")
    p.add_argument("--preset", help="our networks' preset (e.g. small, the CPU benchmark's); theirs built at the same "
                   "widths (default: the option file's, their config's)")
    p.add_argument("--fit-schedule", action="store_true", help="the option file's schedule fitted to --steps as a "
                   "budgeted run fits it (cosine ends there, milestones keep their fractions); their code steps at "
                   "the same learning rates")
    p.add_argument("--save", type=Path, metavar="DIR", help="write each code's final (first-stage) network as our "
                   "checkpoint, DIR/authors.pth and DIR/ours.pth")
    p.add_argument("--write-docs", action="store_true", help="also write the section of docs/results.md")
    args = p.parse_args(argv)
    if args.net and args.method != "amsnet":
        p.error(f"--net is for --method amsnet only (method {args.method} has one network)")
    if min(args.steps, args.threads, args.batch or 1, args.crop or 1) < 1:
        p.error("--steps, --threads, --batch and --crop must be at least 1")
    if args.steps2 is not None and (args.method not in SECOND or args.steps2 < 0):
        p.error(f"--steps2 {args.steps2}: for atbsn and aprrd only, at least 0")
    if args.preset not in (None, "published") and args.method in SECOND and args.steps2 != 0:
        p.error(f"--preset {args.preset} with {args.method}: their distillation networks have fixed widths; "
                "add --steps2 0 (the first stage only)")
    if args.images is not None and not args.images.is_dir():
        p.error(f"--images {args.images}: not a folder")
    if not (args.authors_code / MARKERS[args.method]).is_file():
        p.error(f"--authors-code {args.authors_code}: no {MARKERS[args.method]} (not a checkout for {args.method})")
    if not Path(args.authors_python).is_file():
        p.error(f"--authors-python {args.authors_python}: no such file")
    return args


def parity_one(args, c: Case, job: dict) -> tuple[Result, Result, list]:
    """One training stage of each code (amsnet, apbsn): the authors' run, then ours."""
    opt = as_run(our_options(c.options, args.preset), args, args.steps)
    if opt["method"].get("loss_in_value_range") is False:                  # our loss on [0, 1]: theirs / range
        c.loss_scale = float(opt["method"]["value_range"])
    batches = training_batches(args, args.steps, args.batch or c.batch, args.crop or c.crop, args.seed)
    init = initial_weights(opt, args.seed)
    theirs = run_authors(args.authors_python, {**job, "init": to_authors(args.method, init),
                                               "batches": portable(batches), "widths": preset_widths(opt, args.preset),
                                               "lrs": lrs_for(args, opt)})
    authors = Result(theirs["losses"], theirs["lrs"], from_authors(args.method, c.arch, theirs["state"]))
    ours = train_ours(opt, init, batches, args.seed, c.loss_scale)
    save_networks(args, opt, {"authors": authors.weights, "ours": ours.weights})
    return authors, ours, batches


def lrs_for(args, opt: dict) -> list | None:
    return schedule_lrs(opt, opt["train"]["total_iter"]) if args.fit_schedule else None


def save_networks(args, opt: dict, weights: dict) -> None:
    """--save DIR: each code's final network as our checkpoint, DIR/<code>.pth (to score with valid.py, or as a
    benchmark entry's ``checkpoint``)."""
    if args.save is None:
        return
    args.save.mkdir(parents=True, exist_ok=True)
    for code, state in weights.items():
        write_network(opt, state, args.save / f"{code}.pth",
                      {"kind": "train_parity", "code": code, "method": args.method, "steps": args.steps})


def write_network(opt: dict, state: dict, path: Path, imported_from: dict) -> None:
    """Weights ``state`` of ``opt``'s network written as our checkpoint, with ``opt``'s method."""
    from amcfd.archs import build_arch
    from amcfd.hub.importers import write_checkpoint

    net = build_arch(opt["network"])
    net.load_state_dict(state)
    write_checkpoint(net, opt["network"], opt["method"], path, imported_from)


def parity_two_stage(args, c: Case, job: dict) -> tuple[Result, Result, list]:
    """A BSN, then its distillation from our trained BSN (the same teacher in both codes): --steps of each,
    the losses one after the other, the weights of both networks (``teacher.``/``student.``)."""
    options2, arch2 = SECOND[args.method]
    steps2 = args.steps if args.steps2 is None else args.steps2
    opt1 = as_run(our_options(c.options, args.preset), args, args.steps)
    batches = training_batches(args, args.steps, args.batch or c.batch, args.crop or c.crop, args.seed)
    init = initial_weights(opt1, args.seed)
    ours1 = train_ours(opt1, init, batches, args.seed)
    first = {**job, "init": init, "batches": portable(batches), "widths": preset_widths(opt1, args.preset),
             "lrs": lrs_for(args, opt1)}
    if steps2 == 0:                                         # the first stage only
        theirs = run_authors(args.authors_python, first)
        authors = Result(theirs["losses"], theirs["lrs"], convert_teacher(c.arch, theirs["state"]))
        save_networks(args, opt1, {"authors": authors.weights, "ours": ours1.weights})
        return authors, ours1, batches
    opt2 = as_run(our_options(options2, args.preset), args, steps2)
    batch2, crop2 = second_case(args.method, Path(job["code"]))
    batches2 = training_batches(args, steps2, args.batch or batch2, args.crop or crop2, args.seed + 1)
    student = initial_weights(opt2, args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        write_network(opt1, ours1.weights, Path(tmp) / "teacher.pth", {"kind": "parity"})
        opt2["method"]["teacher"] = {"checkpoint": str(Path(tmp) / "teacher.pth")}
        ours2 = train_ours(opt2, student, batches2, args.seed + args.steps)
    theirs = run_authors(args.authors_python, {**first, "teacher": ours1.weights, "student": student,
                                               "batches2": portable(batches2), "lrs2": lrs_for(args, opt2)})
    their_teacher, their_student = two_stage_from_authors(args.method, c.arch, arch2, theirs["state"])
    authors = Result(theirs["losses"], theirs["lrs"], {**{f"teacher.{k}": v for k, v in their_teacher.items()},
                                                       **{f"student.{k}": v for k, v in their_student.items()}})
    ours = Result(ours1.losses + ours2.losses, ours1.lrs + ours2.lrs,
                  {**{f"teacher.{k}": v for k, v in ours1.weights.items()},
                   **{f"student.{k}": v for k, v in ours2.weights.items()}})
    return authors, ours, batches


def convert_teacher(arch: str, state: dict) -> dict:
    """Their first-stage network under our names."""
    from amcfd.archs import convert_state_dict

    return convert_state_dict(arch, state["teacher"])


def two_stage_from_authors(method: str, arch: str, arch2: str, state: dict) -> tuple[dict, dict]:
    """Their teacher and student (atbsn: the student inside their ``DoubleNet``, ``nbsn.*``) under our names."""
    from amcfd.archs import convert_state_dict

    teacher, student = convert_teacher(arch, state), convert_state_dict(arch2, state["student"])
    if method == "atbsn":
        student = {k[len("nbsn."):]: v for k, v in student.items() if k.startswith("nbsn.")}
    return teacher, student


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker(*argv[1:3])
    try:
        args = parse(argv)
    except ArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    code = args.authors_code.resolve()
    deterministic(args.threads)
    c = case(args.method, args.net, code)
    job = {"method": args.method, "code": str(code), "config": NETS[args.net or "restormer"][1], "seed": args.seed,
           "threads": args.threads}
    run = parity_two_stage if args.method in SECOND else parity_one
    try:
        authors, ours, batches = run(args, c, job)
    except (RuntimeError, ArgumentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    net = f" ({c.arch})" if args.method == "amsnet" else ""
    print(f"{args.method}{net}: {args.steps} steps, batch {batches[0].shape[0]} x {batches[0].shape[-1]}^2, "
          f"ours options/train/{c.options}")
    status, lines = finish(args.method, authors, ours)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        crops = f"crops of {args.images}" if args.images else "synthetic noisy crops"
        run_of = "".join([f", networks at preset {args.preset}" if args.preset else "",
                          ", the schedule fitted to the steps" if args.fit_schedule else "",
                          f", {args.steps2 if args.steps2 is not None else args.steps} distillation steps"
                          if args.method in SECOND else ""])
        body = (f"Our training against the authors' code ({args.authors_code.name}), {args.steps} steps from the same "
                f"random weights, the same batches ({batches[0].shape[0]} x {batches[0].shape[-1]}², {crops})"
                f"{run_of}, float32 on the CPU, deterministic; ours from options/train/{c.options}. Loss per "
                "step (in their units) and the largest relative difference of a parameter tensor at the end "
                f"(L2); parity when the loss differs by at most {LOSS_TOL:g} and the weights by at most "
                f"{WEIGHT_TOL:g}.\n\n" + "\n".join(lines))
        title = f"Parity: training, {args.method}{net}"
        if args.images:
            title = f"Parity: {args.steps} steps on {args.images.resolve().parent.name}, {args.method}{net}"
        update_section(title, body, command_line(__file__, argv).replace(str(args.authors_code), "AUTHORS_CHECKOUT"))
    return status


if __name__ == "__main__":
    sys.exit(main())
