"""AMSNet-Restormer inference time: ours against the authors' code (lll143653/amsnet), side by side.

    git clone https://github.com/lll143653/amsnet /tmp/amsnet && pip install einops   # their code, not ours
    python scripts/bench_authors_speed.py --authors-code /tmp/amsnet --write-docs

Both pipelines run the same random weights of the published Restormer (AMSNet's configs/restormer.yaml: their
``MultiMaskPdDn`` with ``mmbd``, 2 masks, ``pd_val`` 2) on one --size x --size image: B = multi-mask inference
at PD 2; B-E = B + R^3 (8 copies, 0.16), as their ``forward`` in eval mode runs it. Ours: the AMSNet method
(``denoise``) with its default batching. Their repository is read from --authors-code at run time and never
copied here; the imports their modules make but this timing does not need (Lightning, loguru, torchmetrics,
torchvision, matplotlib, joblib) are stubbed, and einops must be installed. Each timed call is preceded by one
warm-up call of B of each code; the calls of one repetition run back to back (authors, ours) and the ratio is
taken per repetition; medians over --reps (B) and --reps-e (B-E). That the two pipelines give the same outputs
for the same masks is tested in tests/test_amsnet_identity.py.
"""
from __future__ import annotations

import argparse
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
STUBBED = ("lightning", "lightning.pytorch", "lightning.pytorch.cli", "pytorch_lightning",
           "pytorch_lightning.utilities", "pytorch_lightning.utilities.types", "loguru", "joblib", "torchmetrics",
           "torchvision", "torchvision.utils", "matplotlib", "matplotlib.pyplot")


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
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]


def authors_pipelines(code: Path, weights: dict) -> dict:
    """Their MultiMaskPdDn for B and B-E, with ``weights`` (our Restormer state_dict: the same keys)."""
    try:
        import einops  # noqa: F401
    except ImportError:
        sys.exit("their Restormer needs einops: pip install einops")
    _stub_modules()
    sys.path.insert(0, str(code))
    from codes.model import MultiMaskPdDn

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


def main(argv=None) -> int:
    import torch

    from amcfd.archs import build_arch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--authors-code", type=Path, required=True, help="checkout of github.com/lll143653/amsnet")
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of B (default 3)")
    p.add_argument("--reps-e", type=int, default=2, help="timed repetitions of B-E (default 2)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_authors_speed.json")
    p.add_argument("--write-docs", action="store_true", help="also the section of docs/results.md")
    args = p.parse_args(argv)
    if not (args.authors_code / "codes" / "model.py").is_file():
        p.error(f"--authors-code {args.authors_code}: no codes/model.py (a checkout of github.com/lll143653/amsnet)")
    if min(args.size, args.threads, args.reps, args.reps_e) < 1:
        p.error("--size, --threads, --reps and --reps-e must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_arch({"type": "Restormer", "preset": "published"}).eval()
    theirs = authors_pipelines(args.authors_code.resolve(), net.state_dict())
    ours = our_pipelines(net)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    rows = {}
    with torch.no_grad():
        timed(lambda: theirs["B"](x))                              # warm-up (B-E runs the same kernels)
        timed(lambda: ours["B"].denoise(x))
        for variant, reps in (("B", args.reps), ("B-E", args.reps_e)):
            times = {"authors": [], "ours": []}
            for _ in range(reps):
                times["authors"].append(timed(lambda v=variant: theirs[v](x)))
                times["ours"].append(timed(lambda v=variant: ours[v].denoise(x)))
                print(f"{variant}: authors {times['authors'][-1]:.2f} s, ours {times['ours'][-1]:.2f} s", flush=True)
            ratios = [a / o for a, o in zip(times["authors"], times["ours"])]
            rows[variant] = {"authors_s": statistics.median(times["authors"]),
                             "ours_s": statistics.median(times["ours"]), "speedup_median": statistics.median(ratios),
                             "speedup_min": min(ratios), "reps": reps}
    table = ["| pipeline | authors' code (s) | ours (s) | ours faster by (median, min over repetitions) |",
             "|---|---|---|---|"]
    for variant, r in rows.items():
        table.append(f"| {variant} | {r['authors_s']:.2f} | {r['ours_s']:.2f} | {r['speedup_median']:.2f}x "
                     f"({r['speedup_min']:.2f}x) |")
    text = "\n".join(table)
    print(text)
    report = {"size": args.size, "threads": args.threads, "rows": rows, "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_docs:
        from amcfd.analysis.results_doc import command_line, update_section

        body = (f"AMSNet with the published Restormer (26.1M parameters, random weights: the weights do not change "
                f"the time), one {args.size}x{args.size} image, {args.threads} CPU threads; seconds per image, "
                f"median over repetitions (B {args.reps}, B-E {args.reps_e}), the two codes back to back in each."
                f"\n\n{text}")
        update_section("Speed: AMSNet-Restormer, ours vs the authors' code", body,
                       command_line(__file__, argv).replace(str(args.authors_code), "AUTHORS_CHECKOUT"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
