"""Subcommands of ``bench``. Each module registers one command in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from bench.registry import Registry


@dataclass(frozen=True)
class Command:
    """A subcommand: help text, an argument adder and a handler ``(args) -> exit code``."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int | None]
    description: str = ""

    def add_parser(self, sub: argparse._SubParsersAction, name: str) -> None:
        parser = sub.add_parser(name, help=self.help, description=self.description or self.help)
        self.configure(parser)
        parser.set_defaults(handler=self.handler)


COMMANDS: Registry[Command] = Registry("command")

#: Modules imported by the CLI; each registers its command(s).
COMMAND_MODULES = (
    "bench.commands.params",
    "bench.commands.data",
    "bench.commands.points",
    "bench.commands.wsss",
    "bench.commands.pretrain",
    "bench.commands.reference",
    "bench.commands.bestie",
    "bench.commands.p2seg",
    "bench.commands.segment",
    "bench.commands.point_filter",
    "bench.commands.evaluate",
    "bench.commands.report",
)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` → ``{"a.b": 1, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def slot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, choices=("voc", "coco"), help="benchmark slot (data.voc or data.coco in params)"
    )


def method_variant(value: str) -> tuple[str, str]:
    """An argparse type: ``"METHOD/VARIANT"`` (a run folder ``runs/<slot>/METHOD/VARIANT/``, a table row)
    → ``(method, variant)``."""
    method, sep, variant = value.partition("/")
    if not sep or not method or not variant or "/" in variant:
        raise argparse.ArgumentTypeError(f"{value!r}: expected METHOD/VARIANT, e.g. bestie/points")
    return method, variant


def params_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
