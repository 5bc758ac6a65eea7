"""``bench pipeline`` — write or check ``dvc.yaml``, generated from the method registry (:mod:`bench.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands import COMMANDS, Command
from bench.io import write_text


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("write", "check"),
                        help="write: regenerate dvc.yaml; check: fail (exit 1) when it differs from the registry's")
    parser.add_argument("--out", default="dvc.yaml", help="the file (default: dvc.yaml)")


def _handle(args: argparse.Namespace) -> int:
    from bench.pipeline import render

    text, path = render(), Path(args.out)
    if args.action == "write":
        write_text(path, text)
        print(f"wrote {path}")
        return 0
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        print(f"{path} is stale: it is not what the registered methods and stage groups generate; "
              "run `bench pipeline write`")
        return 1
    print(f"{path}: up to date")
    return 0


COMMANDS.add("pipeline", Command("write or check dvc.yaml (generated from the registered methods' stage groups)",
                                 _configure, _handle))
