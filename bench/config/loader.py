"""Load, validate and flatten ``params.yaml``; render profiles.

Every stage calls :func:`load_params` before any work: an unknown key, a wrong type or
an out-of-range value stops it with a message that names the key and what is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bench.config.schema import Params
from bench.registry import Registry

PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "profiles"
PROFILE_NAMES = ("embedded", "embedded-full", "smoke", "voc", "coco")


class ParamsError(ValueError):
    """Invalid params; the message names the file, the key and what is allowed."""


#: Checks of validated params against what the code registers (e.g. that ``report.variants`` names
#: registered variants); a check raises ``ValueError`` naming the key. The modules that own the registries
#: add them (the CLI imports every command module), and :func:`validate_params` runs them all.
PARAMS_CHECKS: Registry[Callable[[Params], None]] = Registry("params check")


def _field_help(loc: tuple[Any, ...]) -> str:
    """The description and constraints of the schema field at ``loc`` (best effort)."""
    model: type[BaseModel] | None = Params
    info = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return ""
        info = model.model_fields[part]
        ann = info.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if info is None:
        return ""
    bits = [info.description] if info.description else []
    bits += [str(m) for m in info.metadata]
    return "; ".join(bits)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid params"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            lines.append(f"  {key}: unknown key (allowed here: {', '.join(allowed)})")
            continue
        given = err.get("input")
        hint = _field_help(err["loc"])
        shown = f" = {given!r}" if not isinstance(given, (dict, list)) else ""
        lines.append(f"  {key}{shown}: {err['msg']}" + (f" [{hint}]" if hint else ""))
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc:
        ann = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def missing_keys(raw: dict[str, Any], model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """The dotted keys of the schema that ``raw`` leaves out (sections and keys, not the entries of free-form
    mappings such as ``data.voc.synthetic``)."""
    missing = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            missing.append(key)
            continue
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(raw[name], dict):
            missing += missing_keys(raw[name], ann, f"{key}.")
    return missing


def validate_params(raw: Any, *, source: str = "params", complete: bool = False) -> Params:
    """Validate a raw mapping against the schema; raise :class:`ParamsError` naming every bad key.

    Types are strict, as YAML/JSON reads them: ``true`` is no integer and ``'yes'`` no boolean (an integer
    is still a valid float). With ``complete`` every section and key of the schema must be present: a params
    file that leaves one out would silently run on its default (``bench params use <profile>`` renders a
    complete file)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    if complete and (missing := missing_keys(raw)):
        shown = ", ".join(missing[:12]) + (f" (and {len(missing) - 12} more)" if len(missing) > 12 else "")
        raise ParamsError(f"{source}: incomplete params: missing {shown}. A params file must set every key; "
                          "render a complete one with `bench params use <profile>` and edit it")
    try:
        text = json.dumps(raw, default=str, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{source}: params are not plain YAML data: {exc}") from None
    try:
        params = Params.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ParamsError(_format_errors(source, exc)) from None
    for _, check in PARAMS_CHECKS.items():
        try:
            check(params)
        except ValueError as exc:
            raise ParamsError(f"{source}: invalid params\n  {exc}") from None
    return params


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read ``params.yaml`` with the safe YAML loader and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root, or `bench params use embedded`)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw, source=str(path), complete=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested sections to dotted keys:
    ``{"mdm": {"hard_pixel_ratio": 0.2}}`` → ``{"mdm.hard_pixel_ratio": 0.2}``."""
    if isinstance(tree, BaseModel):
        tree = tree.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = tree
    return out


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, section by section; an explicit ``{}`` empties a mapping."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and value and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


#: ``report.variants: all`` in a profile: every variant of every registered stage group.
ALL_VARIANTS = "all"


def _profile_override(name: str, profiles_dir: Path) -> dict[str, Any]:
    """``<name>.yaml``, on top of the profile its ``_BASE_`` names (if any), as detectron2's configs inherit."""
    if name not in PROFILE_NAMES:
        raise ParamsError(f"unknown profile {name!r}; allowed: {', '.join(PROFILE_NAMES)}")
    override = yaml.safe_load((profiles_dir / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    base = override.pop("_BASE_", None)
    return _deep_merge(_profile_override(base, profiles_dir), override) if base else override


def all_variants() -> dict[str, list[str]]:
    """Every registered stage group with all its variants (what ``report.variants: all`` expands to)."""
    from bench.commands import load_commands
    from bench.methods import groups

    load_commands()
    return {group.name: list(group.variants) for _, group in groups() if group.variants}


def render_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict[str, Any]:
    """The full params of a profile: schema defaults overridden by ``<name>.yaml`` (and the profile it inherits
    with ``_BASE_``); ``report.variants: all`` expands to every variant of every stage group."""
    override = _profile_override(name, profiles_dir)
    everything = all_variants()
    chosen = override.setdefault("report", {}).get("variants") or {}
    # every stage group gets a list (dvc.yaml's matrices read them all): [] runs none of its variants
    override["report"]["variants"] = everything if chosen == ALL_VARIANTS else \
        {group: chosen.get(group, []) for group in everything} | chosen
    merged = _deep_merge(Params().model_dump(mode="json"), override)
    merged["profile"] = name
    return validate_params(merged, source=str(profiles_dir / f"{name}.yaml")).model_dump(mode="json")


def dump_params(params: dict[str, Any]) -> str:
    """YAML text of a full params mapping, in schema order, with a header saying how it was made."""
    header = (
        f"# WSIS-Bench params — profile '{params['profile']}'.\n"
        "# Switch profile with `bench params use <embedded|smoke|voc|coco>`; change one value with\n"
        "# `dvc exp run -S section.key=value`. Validated by bench/config/schema.py at every stage start.\n"
    )
    return header + yaml.safe_dump(params, sort_keys=False, default_flow_style=None, width=100)
