"""The one command's quality: ``amcfd-denoise`` on a set of noisy photos with clean references, against the
classical core on the same photos.

    python scripts/bench_denoise_quality.py ../shared/data/cc15 --budget-minutes 15 --write-docs cc15

Runs ``amcfd-denoise SET/noisy --clean SET/clean --budget-minutes B --work W --output W/out`` in this process
(``amcfd.denoise.run``, the command itself: its stages, its student, its comparison with ``--method classical``)
and prints, or writes as the docs/results.md section "One command: NAME", the stages' steps and minutes, the mean
PSNR / SSIM of the input, the command's output and the classical core, and one row per photo. W defaults to
results/denoise/NAME; a finished run's stages are kept there and reused (``amcfd-denoise``'s own reuse).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def report(summary: dict, budget: float) -> str:
    """The section body: stages, means and the per-photo table of ``amcfd.denoise.run``'s summary."""
    from amcfd.analysis.report import BELOW_DB
    from amcfd.denoise import below_input, trained_stages

    s, core = summary["scores"], summary["classical"]
    stages = ", ".join(f"{name} {v['steps']} steps / " + ("kept" if v["minutes"] is None else f"{v['minutes']:.1f} min")
                       for name, v in trained_stages(summary).items())
    lines = [f"{s['images']} photos, --budget-minutes {budget:g}; stages: {stages}. The classical core: "
             "`--method classical` on the same photos.", "",
             "| | PSNR | SSIM (skimage) | SSIM (MATLAB) | below input |", "|---|---|---|---|---|"]
    per_core = core["per_image"]
    for label, scores, which in (("noisy input", s, "input"), ("amcfd-denoise", s, "output"),
                                 ("the classical core", core, "output")):
        below = "" if which == "input" else below_input(scores)
        lines.append(f"| {label} | {scores[which + ' PSNR']:.2f} | {scores[which + ' SSIM']:.4f} | "
                     f"{scores[which + ' SSIM-MATLAB']:.4f} | {below} |")
    gain = s["output PSNR"] - core["output PSNR"]
    lines += ["", f"amcfd-denoise against the classical core: {gain:+.2f} dB (mean PSNR); better on "
              f"{sum(o > per_core[k][1] for k, (_, o) in s['per_image'].items())} of {s['images']} photos. "
              f"Below input: more than {BELOW_DB} dB below the noisy photo.", "",
              "Per photo, PSNR (dB):", "", "| photo | noisy input | amcfd-denoise | the classical core |",
              "|---|---|---|---|"]
    for name, (noisy, out) in s["per_image"].items():
        lines.append(f"| {name} | {noisy:.2f} | {out:.2f} | {per_core[name][1]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("set", type=Path, help="a folder with noisy/ and clean/ (the same names)")
    p.add_argument("--budget-minutes", type=float, default=15.0)
    p.add_argument("--work", type=Path, help="the command's --work (default results/denoise/NAME)")
    p.add_argument("--name", help="the set's name (default: the folder's)")
    p.add_argument("--write-docs", action="store_true", help="write the section 'One command: NAME'")
    args = p.parse_args(argv)
    noisy, clean = args.set / "noisy", args.set / "clean"
    if not noisy.is_dir() or not clean.is_dir():
        print(f"error: {args.set}: needs noisy/ and clean/ folders", file=sys.stderr)
        return 2
    name = args.name or args.set.resolve().name
    work = args.work or Path("results/denoise") / name
    from amcfd.denoise import run
    from amcfd.registry import ConfigError

    try:
        summary = run([str(noisy), "--clean", str(clean), "--budget-minutes", str(args.budget_minutes),
                       "--work", str(work), "--output", str(work / "out")])
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    body = report(summary, args.budget_minutes)
    print(body)
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        update_section(f"One command: {name}", body, command_line(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
