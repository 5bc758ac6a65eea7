"""``bench`` — the command line of WSIS-Bench; one subcommand per pipeline stage.

The CLI is the only integrator: it wires params, datasets, methods, evaluation and
reports together. Each subcommand lives in a module of ``bench.commands`` that adds its
parser and handler to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from bench.commands import COMMANDS, load_commands
from bench.config.loader import ParamsError
from bench.stages.base import setup_logging

log = logging.getLogger("bench")


def check_datasets_package() -> None:
    """Fail loudly if ``import datasets`` finds another package (e.g. Hugging Face ``datasets``)."""
    module = importlib.import_module("datasets")
    if not getattr(module, "WSIS_BENCH_DATASETS", False):
        raise ImportError(
            f"`import datasets` resolved to {getattr(module, '__file__', module)!r}, not WSIS-Bench's datasets "
            "package. Uninstall the other one (e.g. `pip uninstall datasets`) or run from the repository root."
        )


def build_parser() -> argparse.ArgumentParser:
    check_datasets_package()  # before any command module imports `datasets`
    parser = argparse.ArgumentParser(
        prog="bench",
        description="WSIS-Bench: reproduce P2Seg, BESTIE, Point2Mask and JTSM tables. "
        "Normally run through `dvc repro`; every stage is also a subcommand here.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    load_commands()
    for name, command in COMMANDS.items():
        command.add_parser(sub, name)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, DVC stopping a stage), raised like Ctrl-C's ``KeyboardInterrupt`` so
    that the same clean-up runs: temporaries removed, the MLflow run ended KILLED."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


#: Errors of the user's inputs or settings: one line, no traceback (``-v`` shows it). FloatingPointError is a
#: training that diverged (a non-finite loss; its message names the step, the loss and the params to try).
USER_ERRORS = (ParamsError, ValueError, FileNotFoundError, KeyError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:
        if args.verbose:
            raise
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        print(f"bench {args.command}: interrupted ({name}); partial outputs removed, the run is marked KILLED",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"bench {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
