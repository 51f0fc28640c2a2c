"""Peak memory (RSS) of ``amcfd-denoise`` on big photos, with and without giving training memory back.

    python scripts/bench_denoise_memory.py --make PHOTOS       # 20 synthetic 4000x3000 JPEG photos (camera noise)
    python scripts/bench_denoise_memory.py PHOTOS --budget-minutes 10 --work W [--write-docs]

Runs ``amcfd-denoise PHOTOS --budget-minutes B`` twice, each in a fresh Python process (``--case``):
  released  as shipped: when a training run ends, the memory that ``train.reuse_cpu_memory`` kept for the next
            step is given back (``engine.memory.stop_keeping_freed_memory``);
  kept      the same with that release turned off (the trainer's call replaced by a no-op): the process holds
            its training peak to the end.
Each child reads its peak resident set size (``VmHWM`` of /proc/self/status) per phase, resetting it
(``/proc/self/clear_refs``) when a phase starts: planning (from the start, the budget probes included), each
training stage (from its Trainer's construction, which includes the coarse stage's teacher targets, to the end of
its ``train()``), then the denoising of the photos (everything after the last stage). It also reads the RSS right
after each stage. Linux only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2 ** 20
CASES = ("released", "kept")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")       # resets VmHWM to the current RSS


def make_photos(folder: Path, count: int, size: tuple[int, int], quality: int = 95) -> None:
    """``count`` photos of ``size`` (width, height): scikit-image samples resized, through the demo's camera
    pipeline (amcfd.data.synthetic) at a mid noise level, saved as JPEG."""
    import cv2
    import numpy as np

    from amcfd.data.synthetic import SAMPLE_IMAGES, camera_pipeline, load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = SAMPLE_IMAGES[i % len(SAMPLE_IMAGES)]
        image = cv2.resize(load_sample_image(name), size, interpolation=cv2.INTER_CUBIC).clip(0, 1)
        noisy = camera_pipeline(image, 8e-3, 3e-4, np.random.default_rng(i))
        bgr = np.round(noisy[..., ::-1] * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"photo_{i:02d}_{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])


def run_case(case: str, argv: list[str], out: Path) -> None:
    """In this process: amcfd-denoise ``argv``, phases' peaks written to ``out`` (JSON)."""
    from amcfd import denoise
    from amcfd.engine import trainer as trainer_module

    if case == "kept":
        trainer_module.stop_keeping_freed_memory = lambda: None
    phases: list[dict] = []
    init, train = trainer_module.Trainer.__init__, trainer_module.Trainer.train

    def traced_init(self, *a, **k):
        if not phases:                          # from the start: arguments, the photos' list, budget probes
            phases.append({"phase": "plan", "peak": status_kib("VmHWM"), "after": status_kib("VmRSS")})
        reset_peak()
        init(self, *a, **k)

    def traced_train(self, *a, **k):
        try:
            return train(self, *a, **k)
        finally:
            phases.append({"phase": self.opt["name"].split("-")[0], "peak": status_kib("VmHWM"),
                           "after": status_kib("VmRSS")})
            reset_peak()

    trainer_module.Trainer.__init__, trainer_module.Trainer.train = traced_init, traced_train
    code = denoise.main(argv)
    phases.append({"phase": "denoise", "peak": status_kib("VmHWM"), "after": status_kib("VmRSS")})
    out.write_text(json.dumps({"case": case, "exit": code, "phases": phases}) + "\n")


def table(results: list[dict]) -> str:
    phases = [p["phase"] for p in results[0]["phases"]]
    lines = ["| case | " + " | ".join(f"{p} peak" for p in phases) + " | RSS after training | overall peak |",
             "|---" * (len(phases) + 3) + "|"]
    for r in results:
        by = {p["phase"]: p for p in r["phases"]}
        trained = [p for p in r["phases"] if p["phase"] not in ("plan", "denoise")]
        after = f"{trained[-1]['after'] * 1024 / MIB:.0f}" if trained else ""
        peaks = [by[p]["peak"] * 1024 / MIB if p in by else float("nan") for p in phases]
        lines.append(f"| {r['case']} | " + " | ".join(f"{v:.0f}" for v in peaks) + f" | {after} | "
                     f"{max(peaks):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="?", help="folder of photos")
    p.add_argument("--make", metavar="DIR", help="write synthetic photos to DIR and stop")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of --make's photos")
    p.add_argument("--budget-minutes", type=float, default=10.0)
    p.add_argument("--work", default="results/denoise_memory", help="folder of the runs (work and outputs)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/results.md")
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--denoise-args", help=argparse.SUPPRESS)     # --case: amcfd-denoise's arguments, JSON
    args = p.parse_args(argv)
    if args.make:
        try:
            width, height = (int(v) for v in args.size.split("x"))
            assert width > 0 and height > 0 and args.count > 0
        except (ValueError, AssertionError):
            p.error(f"--size must be WIDTHxHEIGHT and --count at least 1, got --size {args.size} --count {args.count}")
        make_photos(Path(args.make), args.count, (width, height))
        print(f"wrote {args.count} photos of {width}x{height} to {args.make}")
        return 0
    if args.case:
        run_case(args.case, json.loads(args.denoise_args), Path(args.out))
        return 0
    if not args.photos or not Path(args.photos).is_dir():
        p.error(f"PHOTOS: not a folder: {args.photos}")
    work = Path(args.work)
    results = []
    for case in args.cases:
        folder = work / case
        shutil.rmtree(folder, ignore_errors=True)          # each case trains from scratch
        folder.mkdir(parents=True)
        out = folder / "memory.json"
        denoise_args = [args.photos, "--output", str(folder / "denoised"), "--work", str(folder / "work"),
                        "--budget-minutes", f"{args.budget_minutes:g}"]
        cmd = [sys.executable, __file__, "--case", case, "--out", str(out), "--denoise-args", json.dumps(denoise_args)]
        print(f"[{case}] {' '.join(cmd[1:])}", file=sys.stderr)
        subprocess.run(cmd, check=True)
        results.append(json.loads(out.read_text()))
    photos = sorted(Path(args.photos).iterdir())
    from PIL import Image

    with Image.open(photos[0]) as first:
        size = first.size
    body = (f"{len(photos)} photos of {size[0]}x{size[1]}, `amcfd-denoise --budget-minutes "
            f"{args.budget_minutes:g}` (all stages trained). Peak RSS (MiB) per phase, each measured from the "
            "phase's start (VmHWM reset): planning (budget probes included), each training stage (from its "
            "Trainer's construction, with the coarse stage's teacher targets, to the end of training), then the "
            "denoising of the photos. released: as shipped (the memory kept for training steps is given back when "
            "a stage ends); kept: that release turned off.\n\n" + table(results))
    print(body)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        written = update_section("Memory: amcfd-denoise on 12-megapixel photos", body, command_line(__file__, argv))
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
