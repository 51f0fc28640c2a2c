"""AMSNet on CC15 at a fixed CPU budget: quality of B, B-E, P, P-E and inference speed, batched vs looped.

    python scripts/bench_amsnet.py                                  # defaults below, ~8 min on 2 cores
    python scripts/bench_amsnet.py --steps 200 --finetune-steps 50 --images 3 --skip-timing   # smoke run
    python scripts/bench_amsnet.py --skip-quality [--tune-malloc]   # speed only (~2 min)

(a) Speed: ms per 512x512 image of the multi-mask pipeline (B, = P) and with R^3 (B-E, = P-E), for
    ``batched_all`` (all branches / copies in one forward), ``batched_1worker`` (the automatic chunks,
    on CPU one image per forward for images of 128x128 and up, one after another), ``batched_auto``
    (the default: those chunks run by one worker thread per torch thread, see amcfd/ops/batching.py),
    optionally ``--chunk-size`` images per forward, and ``looped`` (a Python loop of single-image
    forwards, one per branch and per R^3 copy, using all torch threads; the authors loop over the
    branches and batch their 8 R^3 copies). A warm-up run, then the configurations
    interleaved, median of ``--reps``, with the median minor page faults per image. The weights do not
    change the speed. ``--tune-malloc`` keeps freed memory in glibc's heap (fewer page faults).
(b) Quality: a small denoiser trained self-supervised (AMSNet-B, Eq. 4) on random crops of the CC15
    *noisy* images only, then fine-tuned with the smoothness loss (AMSNet-P, Eq. 10); PSNR and both SSIMs
    against the clean references for the noisy input, B, B-E, P and P-E (all 15 images, 512x512, masks
    seeded). CC15 is the data of ../shared/data (non-commercial licence: read there, never copied).

Threads: torch's default (one per core) unless ``--threads``. Run it on an otherwise idle machine: on
a shared CPU, OpenMP threads that spin-wait for each other are descheduled, which made 2-thread runs
up to 100x slower than 1-thread ones while other jobs ran.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.archs import build_arch  # noqa: E402
from amcfd.data.imageio import list_images, read_image, to_tensor  # noqa: E402
from amcfd.methods.amsnet import AMSNet  # noqa: E402
from amcfd.metrics import psnr, ssim, ssim_matlab  # noqa: E402
from amcfd.ops.augment import augment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = {"psnr": psnr, "ssim": ssim, "ssim_matlab": ssim_matlab}


def load_pairs(root: Path, limit: int | None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Names, noisy and clean stacks (N, 3, H, W) from root/noisy and root/clean."""
    noisy_paths = list_images(root / "noisy")[:limit]
    if not noisy_paths:
        raise FileNotFoundError(f"no images in {root / 'noisy'}")
    noisy, clean = [], []
    for path in noisy_paths:
        partner = root / "clean" / path.name
        if not partner.is_file():
            raise FileNotFoundError(f"{partner} is missing (clean image for {path.name})")
        noisy.append(to_tensor(read_image(path)[0]))
        clean.append(to_tensor(read_image(partner)[0]))
    return [p.stem for p in noisy_paths], torch.stack(noisy), torch.stack(clean)


def random_crops(images: torch.Tensor, batch: int, size: int) -> torch.Tensor:
    """(batch, C, size, size) random crops with a random flip/rotation each (noisy images only)."""
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,)))]
        top = int(torch.randint(img.shape[-2] - size + 1, (1,)))
        left = int(torch.randint(img.shape[-1] - size + 1, (1,)))
        crops.append(augment(img[:, top:top + size, left:left + size], int(torch.randint(8, (1,)))))
    return torch.stack(crops)


def train(method: AMSNet, noisy: torch.Tensor, steps: int, lr: float, batch: int, crop: int, log_every: int,
          label: str) -> float:
    """A plain AdamW + cosine loop over random noisy crops; returns seconds spent."""
    method.train()
    opt = torch.optim.AdamW(method.net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr / 100)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        terms = method({"noisy": random_crops(noisy, batch, crop)})
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            parts = ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items())
            print(f"  [{label}] step {step}/{steps}: {parts} ({time.perf_counter() - start:.0f} s)", flush=True)
    method.eval()
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(method: AMSNet, noisy: torch.Tensor, clean: torch.Tensor, r3: bool, seed: int) -> dict:
    """Mean metrics of method.denoise over the images (one at a time, masks seeded)."""
    method.r3 = r3
    torch.manual_seed(seed)
    sums = dict.fromkeys(METRICS, 0.0)
    start = time.perf_counter()
    for i in range(len(noisy)):
        out = method.denoise(noisy[i:i + 1]).clamp(0, 1)
        for name, fn in METRICS.items():
            sums[name] += float(fn(out, clean[i:i + 1]))
    result = {k: v / len(noisy) for k, v in sums.items()}
    result["sec"] = time.perf_counter() - start
    return result


def metrics_of(images: torch.Tensor, clean: torch.Tensor) -> dict:
    return {name: float(fn(images, clean).mean()) for name, fn in METRICS.items()}


@torch.no_grad()
def time_inference(net: torch.nn.Module, size: int, reps: int, chunk: int | None, r3_copies: int) -> dict:
    """Median ms per (1, 3, size, size) image for each configuration, runs interleaved."""
    configs = {"batched_all": dict(batched=True, chunk_size=0),        # every branch / copy in one forward
               "batched_1worker": dict(batched=True, chunk_size=None, workers=1),  # auto chunks, one at a time
               "batched_auto": dict(batched=True, chunk_size=None),    # the default: auto chunks and workers
               "looped": dict(batched=False, chunk_size=0)}            # one forward per branch and R3 copy
    if chunk is not None:
        configs[f"batched_chunk{chunk}"] = dict(batched=True, chunk_size=chunk)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    table = {}
    for variant, r3 in (("B", False), ("B-E", True)):
        methods = {name: AMSNet(net, r3=r3, r3_copies=r3_copies, **cfg).eval() for name, cfg in configs.items()}
        times: dict[str, list[float]] = {name: [] for name in methods}
        faults: dict[str, list[int]] = {name: [] for name in methods}
        for method in methods.values():                               # warm-up
            method.denoise(image)
        for _ in range(reps):
            for name, method in methods.items():
                faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                method.denoise(image)
                times[name].append(1000 * (time.perf_counter() - start))
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
        row = {f"{name}_ms": statistics.median(ts) for name, ts in times.items()}
        for name in methods:
            if name.startswith("batched"):
                row[f"speedup_{name}_vs_looped"] = row["looped_ms"] / row[f"{name}_ms"]
        # the same ratio within each repetition (back-to-back runs share the machine's load): median, min
        paired = [loop / batch for loop, batch in zip(times["looped"], times["batched_auto"])]
        row["paired_speedup_median"], row["paired_speedup_min"] = statistics.median(paired), min(paired)
        row.update({f"{name}_page_faults": statistics.median(fs) for name, fs in faults.items()})
        table[variant] = row
        print(f"  {variant}: " + ", ".join(f"{k} {v:.0f}" if k.endswith(("_ms", "_faults")) else f"{k} {v:.2f}x"
                                           for k, v in row.items()), flush=True)
    return table


def measure_quality(net: torch.nn.Module, args: argparse.Namespace, report: dict) -> dict:
    """(b): train B, fine-tune P, evaluate noisy / B / B-E / P / P-E; prints the table."""
    names, noisy, clean = load_pairs(args.data, args.images)
    print(f"(b) {len(names)} images from {args.data}; training on noisy crops only", flush=True)
    quality = {"noisy": metrics_of(noisy, clean)}
    strides = dict(pd_train=args.pd_train, pd_test=args.pd_test)
    method = AMSNet(net, r3_copies=args.r3_copies, **strides)
    report["train_sec_B"] = train(method, noisy, args.steps, args.lr, args.batch, args.crop,
                                  max(1, args.steps // 10), "B")
    quality["B"] = evaluate(method, noisy, clean, r3=False, seed=args.seed)
    quality["B-E"] = evaluate(method, noisy, clean, r3=True, seed=args.seed)
    for stride in args.extra_pd_test:                  # the same B network, other inference strides
        method.pd_test = stride
        quality[f"B pd{stride}"] = evaluate(method, noisy, clean, r3=False, seed=args.seed)
        quality[f"B-E pd{stride}"] = evaluate(method, noisy, clean, r3=True, seed=args.seed)

    finetuned = AMSNet(copy.deepcopy(net), finetune_smooth=True, smooth_weight=args.smooth_weight,
                       r3_copies=args.r3_copies, **strides)
    report["train_sec_P"] = train(finetuned, noisy, args.finetune_steps, args.finetune_lr, args.batch, args.crop,
                                  max(1, args.finetune_steps // 5), "P")
    quality["P"] = evaluate(finetuned, noisy, clean, r3=False, seed=args.seed)
    quality["P-E"] = evaluate(finetuned, noisy, clean, r3=True, seed=args.seed)
    print(f"\n{'':10s} {'PSNR':>7s} {'SSIM(skimage)':>14s} {'SSIM(MATLAB)':>13s}")
    for name, row in quality.items():
        print(f"{name:10s} {row['psnr']:7.2f} {row['ssim']:14.4f} {row['ssim_matlab']:13.4f}")
    return quality


def tune_glibc_malloc() -> None:
    """glibc only: keep freed memory in one arena (mmap threshold 1 GiB, no trimming, one arena), so
    large activations are reused instead of unmapped and page-faulted back in at every forward."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    ok = (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
          and libc.mallopt(m_arena_max, 1))
    if not ok:
        raise RuntimeError("mallopt refused the settings")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cc15",
                   help="folder with noisy/ and clean/ (default ../shared/data/cc15)")
    p.add_argument("--images", type=int, default=None, help="use only the first N images")
    p.add_argument("--arch", default="NAFNetBase", help="registered architecture (default NAFNetBase)")
    p.add_argument("--preset", default="small", help="its preset (default small)")
    p.add_argument("--steps", type=int, default=2500, help="AMSNet-B training steps")
    p.add_argument("--finetune-steps", type=int, default=300, help="AMSNet-P fine-tuning steps")
    p.add_argument("--lr", type=float, default=3e-3, help="AMSNet-B peak learning rate (cosine)")
    p.add_argument("--finetune-lr", type=float, default=3e-4, help="AMSNet-P peak learning rate")
    p.add_argument("--pd-train", type=int, default=5, help="PD stride for training (paper: 5)")
    p.add_argument("--pd-test", type=int, default=2, help="PD stride for inference (paper: 2)")
    p.add_argument("--extra-pd-test", type=int, nargs="*", default=[], metavar="S",
                   help="also evaluate the B network (B, B-E) at these inference strides")
    p.add_argument("--smooth-weight", type=float, default=0.01, help="lambda of Eq. 10")
    p.add_argument("--batch", type=int, default=2, help="crops per step")
    p.add_argument("--crop", type=int, default=160, help="crop size (cut down to a multiple of --pd-train)")
    p.add_argument("--r3-copies", type=int, default=8, help="R3 copies T")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--time-size", type=int, default=512, help="image size for the timing")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per configuration")
    p.add_argument("--chunk-size", type=int, default=None, help="also time batched with N images per forward")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--tune-malloc", action="store_true",
                   help="glibc: reuse freed memory instead of returning it (see tune_glibc_malloc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_amsnet.json")
    args = p.parse_args(argv)

    if args.tune_malloc:
        tune_glibc_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    report: dict = {"command": " ".join(["python", "scripts/bench_amsnet.py", *(argv or sys.argv[1:])]),
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "torch": torch.__version__, "threads": torch.get_num_threads()}

    net = build_arch({"type": args.arch, "preset": args.preset})
    report["params"] = sum(q.numel() for q in net.parameters())
    print(f"{args.arch} ({args.preset}): {report['params']:,} parameters, {torch.get_num_threads()} thread(s)",
          flush=True)
    if not args.skip_timing:
        print(f"(a) inference ms per {args.time_size}x{args.time_size} image (median of {args.reps}):", flush=True)
        report["timing_ms"] = time_inference(net.eval(), args.time_size, args.reps, args.chunk_size,
                                             args.r3_copies)

    if not args.skip_quality:
        report["quality"] = measure_quality(net, args, report)
        if not all(math.isfinite(r["psnr"]) for r in report["quality"].values()):
            print("error: non-finite PSNR", file=sys.stderr)
            return 1
    report["total_sec"] = time.perf_counter() - started
    print(f"total {report['total_sec']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
