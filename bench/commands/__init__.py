"""Subcommands of ``bench``. Each module of this package registers its command(s) in :data:`COMMANDS`, and a
method's module also registers the method (:mod:`bench.methods`); :func:`load_commands` imports them all."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
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



def load_commands() -> None:
    """Import every module of this package (each registers its commands and, for a method, the method), then
    freeze the registries: a registration after this raises. Idempotent."""
    from bench.methods import GROUPS, PRODUCERS

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    for registry in (COMMANDS, PRODUCERS, GROUPS):
        registry.freeze()


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
