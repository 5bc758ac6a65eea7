"""``bench params`` — switch profile, validate and show params."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.commands import COMMANDS, Command, parse_assignments
from bench.config.loader import (
    PARAMS_CHECKS,
    PROFILE_NAMES,
    dump_params,
    flatten,
    load_params,
    render_profile,
    validate_params,
)
from bench.config.schema import Params
from bench.io import write_text


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    use = sub.add_parser(
        "use", help="write params.yaml for a profile (embedded, smoke, voc, coco)",
        description="Render a complete params file for a profile: every key of the schema, the schema defaults "
                    "overridden by configs/profiles/<profile>.yaml (and --set). The file is validated before it is "
                    "written (atomically), so a bad --set leaves the old file in place.")
    use.add_argument("profile", choices=PROFILE_NAMES)
    use.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one value, e.g. --set data.voc.root=/data/voc (repeatable)")
    use.add_argument("--out", default="params.yaml", help="file to write (default: params.yaml)")
    val = sub.add_parser(
        "validate", help="validate params.yaml against the schema",
        description="Check a params file the way every stage does at its start: every section and key present "
                    "(no silent defaults), strict types (true is no integer, 'yes' no boolean; an integer is a "
                    "valid float), ranges, no unknown keys. Prints the first problems with their keys.")
    val.add_argument("--params", default="params.yaml")
    show = sub.add_parser(
        "show", help="print the validated params (flattened with --flat)",
        description="Validate a params file (as `bench params validate`) and print it: as YAML, or one "
                    "`section.key = value` line per key with --flat (the names MLflow and `dvc exp run -S` use).")
    show.add_argument("--params", default="params.yaml")
    show.add_argument("--flat", action="store_true")


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ValueError(f"--set {dotted}: {key!r} is not a section")
        node = node[key]
    node[keys[-1]] = value


def _handle(args: argparse.Namespace) -> int:
    if args.action == "use":
        params = render_profile(args.profile)
        for key, value in parse_assignments(args.set).items():
            _set(params, key, value)
        text = dump_params(params)
        validate_params(yaml.safe_load(text), source=f"profile {args.profile} with --set", complete=True)
        write_text(Path(args.out), text)
        print(f"wrote {args.out} (profile {args.profile}); now run `dvc repro`")
    elif args.action == "validate":
        params = load_params(args.params)
        print(f"{args.params}: valid (profile {params.profile})")
    else:
        params = load_params(args.params)
        if args.flat:
            for key, value in flatten(params).items():
                print(f"{key} = {value!r}")
        else:
            sys.stdout.write(dump_params(params.model_dump(mode="json")))
    return 0


def check_run_variants(params: Params) -> None:
    """``report.variants``: every key is a registered stage group, every name one of its variants (dvc.yaml runs
    ``bench <command> --variant <name>`` for it), and every run a selected stage reads is run (bench/methods.py)."""
    from bench.commands import load_commands
    from bench.methods import check_inputs_are_run, check_run_lists

    load_commands()
    check_run_lists(params.report.variants)
    check_inputs_are_run(params.report.variants, list(params.report.seeds))


PARAMS_CHECKS.add("report.variants", check_run_variants)
COMMANDS.add("params", Command(
    "switch profile, validate or show params.yaml", _configure, _handle,
    description="Manage params.yaml, the single source of truth of every stage: `use` renders a complete file for a "
                "profile, `validate` checks one, `show` prints one."))
