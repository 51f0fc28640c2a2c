"""``amcfd-weights``: released trained weights by name, and sharing our own without pickle.

    amcfd-weights list                          # name, source, size, licence, reported numbers, cached or not
    amcfd-weights get tmbsn-sidd                # download, check, import; prints the converted file's path
    amcfd-weights add tmbsn-sidd NBSN_SIDD.pth  # a file downloaded by hand: checked and imported the same way
    amcfd-weights export experiments/x/models/best.pth x.safetensors    # weights + network/method, no pickle, no paths
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """A released model's name works wherever a checkpoint path does (amcfd-denoise --pretrained, valid.py
and test.py path.pretrain_network, a distillation's teacher, a benchmark row). The first use downloads the file
from its source repository at a fixed commit, checks its sha256, imports it, and keeps the converted file in the
cache; later runs need no network.
environment:
  AMCFD_CACHE            the cache (default $XDG_CACHE_HOME/amcfd or ~/.cache/amcfd)
  AMCFD_WEIGHTS_MIRROR   read the file of repository owner/repo at path from MIRROR/owner/repo/path instead
registered names: {names}"""


def _parser() -> argparse.ArgumentParser:
    from amcfd.hub.weights import releases

    p = argparse.ArgumentParser(prog="amcfd-weights", description="Released trained weights by name, and our "
                                "own shared without pickle.", epilog=EPILOG.format(names=", ".join(releases())),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registry of released weights")
    get = sub.add_parser("get", help="download, check and import a released model; prints its path")
    get.add_argument("name", metavar="NAME", help="a registered name (amcfd-weights list)")
    add = sub.add_parser("add", help="check and import a file downloaded by hand")
    add.add_argument("name", metavar="NAME", help="a registered name (amcfd-weights list)")
    add.add_argument("file", metavar="FILE", help="the file as downloaded from its source")
    export = sub.add_parser("export", help="write a checkpoint as .safetensors to share: the weights and the "
                                           "network's and method's options, no path of this machine")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="one of our checkpoints (or a released model's name)")
    export.add_argument("output", metavar="OUT.safetensors", help="the file to write (never overwritten)")
    return p


def registry_table() -> str:
    from amcfd.hub.weights import releases

    lines = ["| name | source | size | licence | reported | cached |", "|---|---|---|---|---|---|"]
    for rel in releases().values():
        lines.append(f"| {rel.name} | {rel.source}/{rel.path} | {rel.size / 1e6:.1f} MB | {rel.licence} | "
                     f"{rel.reported} | {'yes' if rel.cached.is_file() else 'no'} |")
    return "\n".join(lines)


def run(argv=None) -> None:
    from amcfd.engine.checkpoint import load_checkpoint, save_safetensors
    from amcfd.hub.weights import add, fetch, resolve_checkpoint
    from amcfd.registry import ConfigError

    args = _parser().parse_args(argv)
    if args.command == "list":
        print(registry_table())
    elif args.command == "get":
        print(fetch(args.name))
    elif args.command == "add":
        print(add(args.name, args.file))
    else:
        out = Path(args.output)
        if out.suffix != ".safetensors":
            raise ConfigError(f"the output must end in .safetensors, got {out}")
        if out.exists():
            raise ConfigError(f"the output exists, not overwritten: {out}")
        save_safetensors(load_checkpoint(resolve_checkpoint(args.checkpoint)), out)
        print(out)


def main(argv=None) -> int:
    from amcfd.cli import _run

    return _run(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
