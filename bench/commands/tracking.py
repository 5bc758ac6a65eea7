"""``bench tracking`` — send the runs stages recorded locally to MLflow, or count them (bench/tracking.py)."""

from __future__ import annotations

import argparse
import sys

from bench.commands import COMMANDS, Command


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("flush", "status"),
                        help="flush: send buffered runs to the tracking store (MLFLOW_TRACKING_URI, else mlflow.db); "
                             "status: how many runs are buffered")


def _handle(args: argparse.Namespace) -> int:
    from bench.tracking import buffer_dir, buffered_runs, flush, tracking_uri

    if args.action == "status":
        print(f"{len(buffered_runs())} run(s) buffered in {buffer_dir()}")
        return 0
    sent, errors = flush()
    print(f"{sent} run(s) sent to {tracking_uri()}; {len(errors)} still buffered")
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    return 1 if errors else 0


COMMANDS.add("tracking", Command("send the runs stages buffered locally to MLflow (flush) or count them (status)",
                                 _configure, _handle))
