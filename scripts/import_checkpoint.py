"""Turn a checkpoint of the AMSNet, AP-BSN, AM-BSN, AT-BSN, APR-RD or TM-BSN authors into one of ours (for test.py,
valid.py, distillation). The layout is read from the keys and shapes unless ``--from`` names it; a file that fits
layouts with different input ranges is refused until ``--from`` and ``--input-range`` say which.

    python scripts/import_checkpoint.py NBSN_SIDD.pth experiments/tmbsn_nbsn.pth            # TM-BSN: detected
    python scripts/import_checkpoint.py --from apbsn APBSN_SIDD.pth experiments/apbsn.pth   # or AM-BSN's
    python scripts/import_checkpoint.py --from atbsn --input-range 1 NBSN_SIDD_Medium.pth out.pth  # APR-RD 1.00M
    python scripts/import_checkpoint.py --from amsnet IN.ckpt OUT.pth --preset published --r3
    python scripts/import_checkpoint.py --from amsnet IN.ckpt OUT.pth --network-yaml options/train/amsnet_unet.yml

The layouts and what is written: ``amcfd/hub/importers.py``. Released files known by name (downloaded, checked
and imported for you): ``amcfd-weights list``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.hub.importers import AMSNET_ARCHS, LAYOUTS, import_checkpoint  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", choices=list(LAYOUTS),
                        help="the layout of IN (default: detected from its keys); "
                             + "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items()))
    parser.add_argument("input", type=Path, help="the foreign checkpoint")
    parser.add_argument("output", type=Path, help="where to write our checkpoint")
    parser.add_argument("--input-range", type=int, choices=[1, 255],
                        help="the value range the network sees (atbsn: 255 for AT-BSN's files, 1 for APR-RD's)")
    parser.add_argument("--arch", choices=AMSNET_ARCHS, help="the denoiser (default: from the keys)")
    parser.add_argument("--preset", help="a preset of the architecture (default: from the weights' shapes)")
    parser.add_argument("--network-yaml", type=Path, help="YAML with the network: entry (wins over the rest)")
    parser.add_argument("--branch", type=int, default=0, help="AMSNet branch to import (net.dn.branches.N)")
    parser.add_argument("--pd-train", type=int, default=5, help="method.pd_train written (default 5)")
    parser.add_argument("--pd-test", type=int, default=2, help="method.pd_test written (default 2)")
    parser.add_argument("--r3", action="store_true", help="write method.r3: true (the -E variants)")
    parser.add_argument("--no-r3", action="store_true", help="apbsn: write method.r3: false (default: R^3 on)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow full unpickling of IN (only for files you trust)")
    args = parser.parse_args(argv)
    r3 = True if args.r3 else False if args.no_r3 else None
    try:
        out = import_checkpoint(args.input, args.output, args.source, args.input_range, r3, args.unsafe_load,
                                arch=args.arch, preset=args.preset, network_yaml=args.network_yaml,
                                branch=args.branch, pd_train=args.pd_train, pd_test=args.pd_test)
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = sum(v.numel() for k, v in out["network"].items() if not k.endswith(("running_mean", "running_var",
                                                                              "num_batches_tracked")))
    print(f"wrote {args.output}: {out['opt']['network']['type']} ({params:,} weights), "
          f"network {out['opt']['network']}, method {out['opt']['method']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
