"""AMSNet inference and training time: ours against the authors' code (lll143653/amsnet), side by side.

    git clone https://github.com/lll143653/amsnet /tmp/amsnet && pip install einops   # their code, not ours
    python scripts/bench_authors_speed.py --authors-code /tmp/amsnet --write-docs            # inference
    python scripts/bench_authors_speed.py --authors-code /tmp/amsnet --train --write-docs    # training step

Both pipelines run the same random weights of the published Restormer (AMSNet's configs/restormer.yaml: their
``MultiMaskPdDn`` with ``mmbd``, 2 masks, ``pd_val`` 2) on one --size x --size image: B = multi-mask inference
at PD 2; B-E = B + R^3 (8 copies, 0.16), as their ``forward`` in eval mode runs it. Ours: the AMSNet method
(``denoise``) with its default batching. Their repository is read from --authors-code at run time and never
copied here; the imports their modules make but this timing does not need (Lightning, loguru, torchmetrics,
torchvision, matplotlib, joblib) are stubbed, and einops must be installed. Each timed call is preceded by one
warm-up call of B of each code; the calls of one repetition run back to back (authors, ours) and the ratio is
taken per repetition; medians over --reps (B) and --reps-e (B-E). That the two pipelines give the same outputs
for the same masks is tested in tests/test_amsnet_identity.py.

--train: one AMSNet-B training step of each published network (Restormer, batch x crop 4 x 160^2; NAFNetBase,
2 x 160^2; --train-nets picks), the same random weights and input in both codes: their ``MultiMaskPdDn`` in
training mode with their ``FirstPdMaskLoss`` (L1 on the masked positions of the first mask at PD 5, the loss of
their configs), ours the ``AMSNet`` method's training loss at pd_train 5; then backward and an AdamW step
(lr 1e-4, their optimiser), gradients set to None before each step. Each code runs in a process of its own (ours
with the trainer's ``train.reuse_cpu_memory``, theirs with the allocator's defaults, as their trainer has; with
--train-plain also ours without it); in each of --reps repetitions, the processes take turns, each running one
untimed step and one timed step (the untimed one pages the step's memory in). Medians and per-repetition ratios.

--device cuda runs both codes on the GPU (the same comparison; each timing ends with a synchronisation);
--timed-steps N times N steps in each turn and takes their mean, --amp bf16 runs both codes' forward and loss
under the same bf16 autocast (their trainer's default is float32).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# their configs/restormer.yaml (net_param of the Restormer branch)
AUTHORS_RESTORMER = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
                         heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="BiasFree")
AUTHORS_NAFNETBASE = dict(img_channel=3, width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12,
                          dec_blk_nums=[2, 2, 2, 2], dw_expand=1, ffn_expand=2)   # their configs/nafnet.yaml
STUBBED = ("lightning", "lightning.pytorch", "lightning.pytorch.cli", "pytorch_lightning",
           "pytorch_lightning.utilities", "pytorch_lightning.utilities.types", "loguru", "joblib", "torchmetrics",
           "torchvision", "torchvision.utils", "torchvision.transforms", "matplotlib", "matplotlib.pyplot")
TRAIN_CASES = {"Restormer": (4, 160), "NAFNetBase": (2, 160)}      # --train: batch, crop


def _stub_modules() -> None:
    """Modules their files import at load time, as empty stand-ins (torchvision is never imported here)."""
    import logging

    import torch

    for name in STUBBED:
        module = types.ModuleType(name)
        sys.modules[name] = module
    sys.modules["lightning"].pytorch = sys.modules["lightning.pytorch"]
    sys.modules["lightning.pytorch"].LightningModule = torch.nn.Module
    sys.modules["lightning.pytorch"].cli = sys.modules["lightning.pytorch.cli"]
    sys.modules["lightning.pytorch.cli"].OptimizerCallable = object
    sys.modules["lightning.pytorch.cli"].LRSchedulerCallable = object
    from typing import Any

    names = {"Any": Any, "Optimizer": torch.optim.Optimizer, "STEP_OUTPUT": Any}   # what their model.py's
    for key, value in names.items():                                               # star import provides
        setattr(sys.modules["pytorch_lightning.utilities.types"], key, value)
    sys.modules["pytorch_lightning.utilities.types"].__all__ = list(names)
    sys.modules["loguru"].logger = logging.getLogger("authors")
    sys.modules["joblib"].PrintTime = object
    sys.modules["torchvision.utils"].make_grid = None
    sys.modules["torchvision.transforms"].GaussianBlur = None     # their loss.py's BGCLoss, not timed
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]


def _import_authors(code: Path):
    try:
        import einops  # noqa: F401
    except ImportError:
        sys.exit("their Restormer needs einops: pip install einops")
    if "codes.model" not in sys.modules:
        _stub_modules()
        sys.path.insert(0, str(code))
    import codes.loss
    import codes.model

    return codes.model, codes.loss


def authors_pipelines(code: Path, weights: dict) -> dict:
    """Their MultiMaskPdDn for B and B-E, with ``weights`` (our Restormer state_dict: the same keys)."""
    MultiMaskPdDn = _import_authors(code)[0].MultiMaskPdDn

    pipelines = {}
    for variant, r3 in (("B", -1), ("B-E", 0.16)):
        model = MultiMaskPdDn(pd_train=5, pd_val=2, dn_net="mmbd", r3=r3, r3_num=8,
                              net_param={"branch_num": 1, "dn_branch": "Restormer", "branches_order": [0, 0],
                                         "net_param": dict(AUTHORS_RESTORMER)})
        model.dn.branches[0].load_state_dict(weights)
        pipelines[variant] = model.eval()
    return pipelines


def our_pipelines(net) -> dict:
    from amcfd.methods.amsnet import AMSNet

    return {variant: AMSNet(net, pd_train=5, pd_test=2, r3=r3, r3_copies=8, r3_ratio=0.16).eval()
            for variant, r3 in (("B", False), ("B-E", True))}


def _timed(fn, device, repeat: int = 1) -> float:
    """Mean seconds of ``repeat`` calls of ``fn`` (on a GPU, its queued work included)."""
    import torch

    sync = functools.partial(torch.cuda.synchronize, device) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - start) / repeat


def _paired(label: str, theirs, ours, reps: int, device) -> dict:
    """--reps back-to-back repetitions (authors, ours) after one warm-up call of each; medians and ratios."""
    _timed(theirs, device)
    _timed(ours, device)
    times = {"authors": [], "ours": []}
    for _ in range(reps):
        times["authors"].append(_timed(theirs, device))
        times["ours"].append(_timed(ours, device))
        print(f"{label}: authors {times['authors'][-1]:.2f} s, ours {times['ours'][-1]:.2f} s", flush=True)
    return _summary(times, reps)


def _summary(times: dict, reps: int) -> dict:
    """Median seconds of each code (key ``<code>_s``) and the per-repetition ratios authors / ours."""
    ratios = [a / o for a, o in zip(times["authors"], times["ours"])]
    return {**{f"{who.replace('-', '_')}_s": statistics.median(t) for who, t in times.items()},
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "reps": reps}


def _train_worker(conn, code: Path, name: str, who: str, threads: int, device: str, timed_steps: int,
                  amp: str) -> None:
    """One code's training step in a process of its own, so each runs with its own allocator settings:
    "authors" (glibc's defaults), "ours" (the trainer's train.reuse_cpu_memory), "ours-plain" (without it).
    Answers each "step": one untimed step, then the mean seconds of ``timed_steps`` timed steps; then the memory
    kept is given back (untimed), so that the next process's step has the machine's memory. ``amp`` is
    train.amp's setting, with the trainer's autocast and its fallback where the device lacks it."""
    import torch

    from amcfd.archs import build_arch
    from amcfd.engine.memory import keep_freed_memory, release_freed_memory
    from amcfd.engine.precision import amp_dtype
    from amcfd.methods.amsnet import AMSNet

    torch.set_num_threads(threads)
    batch, crop = TRAIN_CASES[name]
    torch.manual_seed(0)
    net = build_arch({"type": name, "preset": "published"}).train()
    x = torch.rand(batch, 3, crop, crop, generator=torch.Generator().manual_seed(1)).to(device)
    if who == "authors":
        model, loss = _import_authors(code)
        theirs = model.MultiMaskPdDn(pd_train=5, pd_val=2, dn_net="mmbd", loss_fn=loss.FirstPdMaskLoss("l1", 5),
                                     net_param={"branch_num": 1, "dn_branch": name, "branches_order": [0, 0],
                                                "net_param": dict(AUTHORS_RESTORMER if name == "Restormer"
                                                                  else AUTHORS_NAFNETBASE)})
        theirs.dn.branches[0].load_state_dict(net.state_dict())
        module, loss_fn = theirs.train(), functools.partial(theirs, x)
    else:
        if who == "ours" and device.type == "cpu":
            keep_freed_memory()
        module = AMSNet(net, pd_train=5, pd_test=2).train()
        loss_fn = functools.partial(lambda m, batch: sum(m(batch).values()), module, {"noisy": x})
    module.to(device)
    optimiser = torch.optim.AdamW(module.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0)
    dtype = amp_dtype(amp, device, "--amp")

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn()
        loss.backward()
        optimiser.step()

    conn.send("ready")
    while conn.recv() == "step":
        step()
        conn.send(_timed(step, device, timed_steps))
        release_freed_memory()
    conn.close()


def training_rows(code: Path, nets: list[str], reps: int, threads: int, plain: bool, device=None,
                  timed_steps: int = 1, amp: str | None = None) -> dict:
    """One AMSNet-B training step of each published network, theirs against ours (and ours without memory
    reuse if ``plain``): per repetition, each code runs a block of one untimed and ``timed_steps`` timed steps
    in turn, on ``device`` (default CPU)."""
    import torch

    device = torch.device(device or "cpu")
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = {}
    for name in nets:
        batch, crop = TRAIN_CASES[name]
        workers = {}
        for who in ("authors", "ours", *(["ours-plain"] if plain else [])):
            parent, child = context.Pipe()
            process = context.Process(target=_train_worker, daemon=True,
                                      args=(child, code, name, who, threads, device, timed_steps, amp))
            process.start()
            assert parent.recv() == "ready"
            workers[who] = (parent, process)
        times = {who: [] for who in workers}
        for _ in range(reps):
            for who, (conn, _) in workers.items():
                conn.send("step")
                times[who].append(conn.recv())
            print(f"{name}: " + ", ".join(f"{who} {t[-1]:.2f} s" for who, t in times.items()), flush=True)
        for conn, process in workers.values():
            conn.send("stop")
            process.join()
        rows[f"{name} {batch} x {crop}²"] = _summary(times, reps)
    return rows


def main(argv=None) -> int:
    import torch

    from amcfd.archs import build_arch
    from amcfd.engine.inference import select_device
    from amcfd.engine.precision import amp_dtype
    from amcfd.registry import ConfigError

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--authors-code", type=Path, required=True, help="checkout of github.com/lll143653/amsnet")
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of B, or of a --train step (default 3)")
    p.add_argument("--reps-e", type=int, default=2, help="timed repetitions of B-E (default 2)")
    p.add_argument("--train", action="store_true", help="time a training step instead of inference")
    p.add_argument("--train-nets", nargs="+", choices=list(TRAIN_CASES), default=list(TRAIN_CASES),
                   help="--train: the networks (default both)")
    p.add_argument("--train-plain", action="store_true",
                   help="--train: also ours with train.reuse_cpu_memory false (glibc's defaults, as the authors')")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where both codes run")
    p.add_argument("--timed-steps", type=int, default=1,
                   help="--train: steps timed in each turn, their mean (default 1)")
    p.add_argument("--amp", choices=("bf16",), default=None,
                   help="--train: both codes under bf16 autocast, as train.amp (default: float32)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON report (default results/bench_authors_speed[_train].json)")
    p.add_argument("--write-docs", action="store_true", help="also the section of docs/results.md")
    args = p.parse_args(argv)
    if not (args.authors_code / "codes" / "model.py").is_file():
        p.error(f"--authors-code {args.authors_code}: no codes/model.py (a checkout of github.com/lll143653/amsnet)")
    if min(args.size, args.threads, args.reps, args.reps_e, args.timed_steps) < 1:
        p.error("--size, --threads, --reps, --reps-e and --timed-steps must be at least 1")
    try:
        device = select_device(args.device)
    except ConfigError as exc:
        p.error(f"--device: {exc}")
    if args.train_plain and device.type != "cpu":
        p.error("--train-plain: memory reuse is a CPU setting; use it with --device cpu")
    args.device = str(device)                                     # auto resolved, for the report
    if amp_dtype(args.amp, device, "--amp") is None:              # this device cannot: float32 (one warning)
        args.amp = None
    torch.set_num_threads(args.threads)
    if args.train:
        return _report(args, argv, training_rows(args.authors_code.resolve(), args.train_nets, args.reps,
                                                 args.threads, args.train_plain, device, args.timed_steps,
                                                 args.amp))
    torch.manual_seed(0)
    net = build_arch({"type": "Restormer", "preset": "published"}).eval()
    theirs = {v: m.to(device) for v, m in authors_pipelines(args.authors_code.resolve(), net.state_dict()).items()}
    ours = {v: m.to(device) for v, m in our_pipelines(net).items()}
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)

    with torch.no_grad():
        rows = {variant: _paired(variant, lambda v=variant: theirs[v](x), lambda v=variant: ours[v].denoise(x), reps,
                                 device) for variant, reps in (("B", args.reps), ("B-E", args.reps_e))}
    return _report(args, argv, rows)


def _seconds(t: float) -> str:
    return f"{t:.2f}" if t >= 1 else f"{t:.4f}"


def _report(args, argv, rows: dict) -> int:
    import torch

    first = "training step" if args.train else "pipeline"
    plain = any("ours_plain_s" in r for r in rows.values())
    table = [f"| {first} | authors' code (s) | ours (s) | ours faster by (median, min over repetitions) |"
             + (" ours, memory not reused (s) |" if plain else ""), "|---|---|---|---|" + ("---|" if plain else "")]
    for variant, r in rows.items():
        table.append(f"| {variant} | {_seconds(r['authors_s'])} | {_seconds(r['ours_s'])} | {r['speedup_median']:.2f}x "
                     f"({r['speedup_min']:.2f}x) |" + (f" {_seconds(r['ours_plain_s'])} |" if plain else ""))
    text = "\n".join(table)
    print(text)
    report = {"mode": "train" if args.train else "inference", "size": args.size, "threads": args.threads,
              "device": args.device, "timed_steps": args.timed_steps, "amp": args.amp,
              "rows": rows, "torch": torch.__version__}
    gpu = args.device != "cpu"
    name = f"bench_authors_speed{'_train' if args.train else ''}{'_gpu' if gpu else ''}.json"
    out = args.out or REPO / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        where = f"on the GPU ({torch.cuda.get_device_name(args.device)})" if gpu else f"{args.threads} CPU threads"
        on_gpu = " on GPU" if gpu else ""
        if args.train:
            steps = "one timed step" if args.timed_steps == 1 else f"{args.timed_steps} timed steps (their mean)"
            precision = "bf16 autocast in both codes" if args.amp == "bf16" else "float32"
            body = (f"One AMSNet-B training step (PD 5, the first mask's L1, backward, AdamW) of the published "
                    f"networks (random weights), {where}, {precision}; seconds per step, median over {args.reps} "
                    f"repetitions; each code in a process of its own, the processes taking turns (one untimed "
                    f"step, then {steps} each).\n\n{text}")
            title = f"Speed: AMSNet training step{on_gpu}{' (bf16)' if args.amp == 'bf16' else ''}, ours vs the " \
                    "authors' code"
        else:
            body = (f"AMSNet with the published Restormer (26.1M parameters, random weights: the weights do not "
                    f"change the time), one {args.size}x{args.size} image, {where}; seconds per image, median over "
                    f"repetitions (B {args.reps}, B-E {args.reps_e}), the two codes back to back in each.\n\n{text}")
            title = f"Speed: AMSNet-Restormer{on_gpu}, ours vs the authors' code"
        update_section(title, body,
                       command_line(__file__, argv).replace(str(args.authors_code), "AUTHORS_CHECKOUT"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
