"""Render the paper tables (the paper's number beside the reproduced one; Δ on real-data profiles), the index
with noise-aware claims and sanity flags, sweep plots, and the figures that plot a metric over training.

Tables are generated only from the specs (``reports/specs``) and the metrics files the
evaluate stage wrote; nothing here is typed by hand.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.flags import ScoredRow, curve_flags, row_flags
from bench.report.metrics import Aggregate, ExperimentResult, load_experiment
from bench.report.provenance import environment, environment_lines
from bench.report.roles import OTHER, WEAK, RunRole
from bench.report.specs import COUNT_KEYS, SLOT_OF, Claim, Experiment, FigureSpec, Paper, Row, TableSpec, row_slot
from bench.report.verdicts import RULE, WORDS, Verdict, judge_seeds

SYNTHETIC_NOTE = (
    "> **Synthetic profile.** These numbers come from the embedded procedurally generated data, "
    "small networks and short schedules; they are **not comparable** to the paper's numbers. "
    "They test the mechanics and whether the paper's claims hold in direction. Use the `voc` / "
    "`coco` profiles on real data to compare with the paper. BESTIE's and P2Seg's backbones start from "
    "the `pretrain` stage's synthetic image-classification weights in place of ImageNet's "
    "(`backbone_init`, docs/pretrain.md); WSSS networks and segmentors start from random weights."
)
#: The status of a row the active profile does not run.
NOT_RUN = "not run in this profile: `bench params use embedded-full`"


@dataclass(frozen=True)
class RenderContext:
    """What every table header needs: profile, datasets of the slots, seeds, switches in effect."""

    profile: str
    slot_datasets: Mapping[str, str]  # slot → dataset source name
    seeds: list[int]
    decimals: int
    switches: Mapping[str, list[str]]  # params section → "key = value (meaning)" lines
    metrics_root: Path
    params: Mapping[str, Any] = field(default_factory=dict)  # the validated params, as a nested dict
    papers: Mapping[str, Paper] = field(default_factory=dict)  # paper id → its paper.yaml
    sections_of: Mapping[str, str] = field(default_factory=dict)  # registered method → its params section
    #: (slot, method) → the variants the active profile's stages write (bench.methods.variant_runs)
    runs: Mapping[tuple[str, str], set[str]] = field(default_factory=dict)
    #: (method, variant) → the run it is the same as, under these params (bench.methods.Producer.same_runs)
    same_runs: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: (method, variant) → the input a user must supply to run it (bench.methods.Producer.external)
    external: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: (method, variant) → what the run is for: weak method, baseline, upper bound (bench.report.roles)
    roles: Mapping[tuple[str, str], RunRole] = field(default_factory=dict)
    #: where the run folders are (their timing.json), for the leaderboard's training times
    runs_root: Path | None = None

    def title(self, paper: str) -> str:
        return self.papers[paper].name if paper in self.papers else paper

    @property
    def synthetic(self) -> bool:
        """Whether the profile runs the embedded synthetic data (its numbers are not comparable to a paper's)."""
        return self.profile.startswith("embedded") or self.profile == "smoke"

    def role(self, experiment: Experiment) -> RunRole:
        """The role of an experiment's run; a method pending its implementation (a paper id) is a weak method."""
        key = (experiment.method, experiment.variant)
        if key in self.roles:
            return self.roles[key]
        return RunRole(WEAK if experiment.method in self.papers or not self.roles else OTHER)

    def run_by_profile(self, slot: str, experiment: Experiment) -> bool | None:
        """Whether the active profile runs ``experiment`` on ``slot``; None when its method is not registered
        (its implementation is pending)."""
        if experiment.method not in self.sections_of:
            return None
        return experiment.variant in self.runs.get((slot, experiment.method), set()) or \
            (experiment.method, experiment.variant) in self.same_runs

    def param(self, dotted: str) -> Any:
        """The value of a dotted params path (``mdm.hard_pixel_ratio``); KeyError names the path."""
        node: Any = self.params
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"params has no {dotted!r} (needed by a sweep's current_param)")
            node = node[part]
        return node


def format_value(value: float | None, decimals: int, key: str = "") -> str:
    """A cell: "–" for none / NaN; a whole count (``key`` in :data:`COUNT_KEYS`) without decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in COUNT_KEYS and float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.{decimals}f}"


_fmt = format_value


def _fmt_agg(agg: Aggregate | None, decimals: int, key: str = "") -> str:
    """A reproduced cell: the mean, with ``± std`` when several seeds give a spread."""
    if agg is None:
        return "–"
    text = _fmt(agg.mean, decimals, key)
    return f"{text} ± {_fmt(agg.std, decimals)}" if agg.std is not None else text


@dataclass(frozen=True)
class RowResults:
    """The metrics behind one row's cells: the row's own experiment and any ``columns_from`` ones."""

    row: Row
    results: dict[str, ExperimentResult | None]  # experiment name → its seeds' metrics (None: not run)
    not_run: frozenset[str] = frozenset()  # experiments the active profile does not run
    external: Mapping[str, str] = field(default_factory=dict)  # experiment → the input a user must supply

    def aggregate(self, key: str) -> Aggregate | None:
        source = self.row.source(key)
        result = self.results.get(source.name) if source is not None else None
        return result.aggregate(key) if result is not None else None

    @property
    def commits(self) -> set[str]:
        return {r.provenance.get("git_commit", "unknown") for r in self.results.values() if r is not None}

    @property
    def status(self) -> str:
        """``reported-only``, ``reproduced`` (every source ran), ``partial (pending: …)`` or ``pending (…)``."""
        if not self.results:
            return "reported-only"
        missing = [name for name, result in self.results.items() if result is None]
        if not missing:
            return "reproduced"
        if set(missing) <= set(self.external):
            return "needs external input: " + "; ".join(self.external[name] for name in missing)
        if set(missing) <= self.not_run:
            return NOT_RUN
        pending = [name for name in missing if name not in self.not_run]
        if len(missing) == len(self.results):
            return f"pending ({', '.join(pending)})"
        return f"partial (pending: {', '.join(pending)})"


def load_row_experiment(slot: str, experiment: Experiment, ctx: RenderContext) -> ExperimentResult | None:
    """The metrics of an experiment; of the run it is the same as, when the params make it one (P2Seg's
    ``hpr-0.2`` is the default run ``hrnet`` while ``mdm.hard_pixel_ratio`` is 0.2)."""
    variant = ctx.same_runs.get((experiment.method, experiment.variant), experiment.variant)
    return load_experiment(slot, experiment.method, variant, ctx.metrics_root)


def row_results(spec: TableSpec, row: Row, ctx: RenderContext) -> RowResults:
    """Load the metrics of every experiment behind ``row``'s cells."""
    sources = row.sources([c.key for c in spec.columns])
    results = {e.name: load_row_experiment(row_slot(spec, e), e, ctx) for e in sources}
    not_run = frozenset(e.name for e in sources if results[e.name] is None
                        and ctx.run_by_profile(row_slot(spec, e), e) is False)
    external = {e.name: ctx.external[(e.method, e.variant)] for e in sources if (e.method, e.variant) in ctx.external}
    return RowResults(row, results, not_run, external)


_OPS: dict[str, Callable[[float, float, float], bool]] = {
    ">": lambda a, b, t: a > b,
    ">=": lambda a, b, t: a >= b,
    "<": lambda a, b, t: a < b,
    "<=": lambda a, b, t: a <= b,
    "~": lambda a, b, t: abs(a - b) <= t,
}


#: The "Paper's numbers" cell of a claim that compares a harness row (a row the paper does not print).
NOT_IN_PAPER = "– (harness row)"


def judge(claim: Claim, left: float | None, right: float | None) -> str:
    """A claim on the paper's printed numbers: ``held`` / ``not held`` / ``pending`` (a side has no number)."""
    if left is None or right is None or math.isnan(left) or math.isnan(right):
        return "pending"
    return "held" if _OPS[claim.op](left, right, claim.tolerance) else "not held"


@dataclass
class TableOutcome:
    spec: TableSpec
    markdown: str
    rows_total: int
    rows_reproduced: int
    rows_pending: int  # no implementation (or no metrics yet)
    claims: list[tuple[Claim, str, str]]  # claim, on reported numbers, verdict word on reproduced numbers
    rows_not_run: int = 0  # implemented, not run by the active profile (or needing a user's input)
    flags: list[str] = field(default_factory=list)  # sanity flags (bench.report.flags)
    rows_reported_only: int = 0  # rows of methods the harness does not run (the paper's numbers only)


def _row_label(spec: TableSpec, row: Row, ctx: RenderContext) -> str:
    label = f"{row.group} · {row.label}" if row.group else row.label
    if spec.sweep is not None and spec.sweep.current_row == row.id:
        label += f" (`{spec.sweep.current_param}` = {ctx.param(spec.sweep.current_param)})"
    return label


def _reported_only_line(spec: TableSpec, ctx: RenderContext) -> str:
    """The rows the harness does not run, in one line that cites them with the paper's numbers."""
    rows = [r for r in spec.rows if r.reproduce == "reported-only"]
    if not rows:
        return ""
    keys = [c.key for c in spec.columns]
    cited = [f"{r.label} ({' / '.join(_fmt(r.reported.get(k), ctx.decimals, k) for k in keys)})" for r in rows]
    return (f"\nReported only — methods the harness does not run, the paper's numbers "
            f"({' / '.join(c.label for c in spec.columns)}): " + "; ".join(cited) + ".\n")


def _scored_rows(spec: TableSpec, results: Mapping[str, RowResults], ctx: RenderContext) -> list[ScoredRow]:
    """The reproduced rows as the sanity flags read them (role and slot of the row's own experiment)."""
    scored = []
    for row in spec.rows:
        if not isinstance(row.reproduce, Experiment):
            continue
        scores = {c.key: agg for c in spec.columns if (agg := results[row.id].aggregate(c.key)) is not None}
        if scores:
            role = ctx.role(row.reproduce)
            scored.append(ScoredRow(_row_label(spec, row, ctx), role.role, role.kind, row_slot(spec, row.reproduce),
                                    scores, row.reproduce.method))
    return scored


def _claims_section(spec: TableSpec, results: Mapping[str, RowResults], ctx: RenderContext,
                    out: io.StringIO) -> list[tuple[Claim, str, str]]:
    """The claims table (the paper's numbers, the noise-aware verdict on the reproduced ones) and the rule."""
    claims: list[tuple[Claim, str, str]] = []
    if not spec.claims:
        return claims
    out.write("\n## Claims\n\n| Claim | Paper's numbers | Reproduced |\n|---|---|---|\n")
    rows = {r.id: r for r in spec.rows}
    for claim in spec.claims:
        left, right = rows[claim.left], rows[claim.right]
        harness_side = not (left.reported and right.reported)
        on_paper = NOT_IN_PAPER if harness_side else judge(
            claim, left.reported.get(claim.metric), right.reported.get(claim.metric))
        testable = all(isinstance(r.reproduce, Experiment) for r in (left, right))
        verdict: Verdict = judge_seeds(claim, results[claim.left].aggregate(claim.metric),
                                       results[claim.right].aggregate(claim.metric), testable=testable)
        claims.append((claim, on_paper, verdict.word))
        out.write(f"| {claim.text} | {on_paper} | {verdict.text(ctx.decimals)} |\n")
    out.write(f"\n{RULE}\n")
    return claims


def render_table(spec: TableSpec, ctx: RenderContext) -> TableOutcome:
    """Markdown of a paper table: the paper's number beside the reproduced one per column (and their difference Δ
    on the real-data profiles only), the rows the harness does not run in one line, the claims with
    noise-aware verdicts, sanity flags, notes and the runs' provenance."""
    results = {row.id: row_results(spec, row, ctx) for row in spec.rows}
    slots = sorted({row_slot(spec, e) for r in spec.rows for e in r.sources([c.key for c in spec.columns])}
                   or {SLOT_OF[spec.reproduced_on]})
    out = io.StringIO()
    title = ctx.title(spec.paper)
    out.write(f"# {title} — Table {spec.table}\n\n*{spec.caption}*\n\n")
    out.write(f"- Paper: {_citation(spec.paper, ctx)} · {spec.paper_dataset}\n")
    out.write("- Reproduced on: " + ", ".join(f"slot `{s}` = `{ctx.slot_datasets.get(s, '?')}`" for s in slots)
              + f" · profile `{ctx.profile}` · seeds {ctx.seeds}\n\n")
    if ctx.synthetic:
        out.write(SYNTHETIC_NOTE + "\n\n")
    with_delta = not ctx.synthetic
    header = ["Row"] + [d for d in _detail_keys(spec)]
    for col in spec.columns:
        header += [f"{col.label} paper", f"{col.label} reproduced"] + (["Δ"] if with_delta else [])
    header.append("Status")
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    reproduced = pending = not_run = 0
    for row in (r for r in spec.rows if r.reproduce != "reported-only"):
        result = results[row.id]
        status = result.status
        reproduced += status == "reproduced"
        pending += status.startswith(("pending", "partial"))
        not_run += status.startswith(("not run", "needs"))
        cells = [_row_label(spec, row, ctx)] + [row.details.get(k, "") for k in _detail_keys(spec)]
        for col in spec.columns:
            rep = row.reported.get(col.key)
            agg = result.aggregate(col.key)
            cells += [_fmt(rep, ctx.decimals, col.key), _fmt_agg(agg, ctx.decimals, col.key)]
            if with_delta:
                cells.append("" if rep is None or agg is None else f"{agg.mean - rep:+.{ctx.decimals}f}")
        cells.append(status)
        out.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    out.write(_reported_only_line(spec, ctx))
    out.write(f"\nReproduced cells: the mean over the seeds that ran, ± the sample standard deviation when more than "
              f"one did (seeds {ctx.seeds}).\n")
    claims = _claims_section(spec, results, ctx, out)
    labels = {c.key: c.label for c in spec.columns}
    flags = row_flags(_scored_rows(spec, results, ctx), labels, ctx.decimals)
    if flags:
        out.write("\n## Sanity flags\n\n" + "".join(f"- {f}\n" for f in flags))
    notes = list(spec.notes)
    for section in sorted({ctx.sections_of[r.reproduce.method] for r in spec.rows
                           if isinstance(r.reproduce, Experiment) and ctx.sections_of.get(r.reproduce.method)}):
        lines = ctx.switches.get(section, [])
        notes.append(f"Paper-vs-release switches in effect (`{section}`): "
                     + ("; ".join(lines) if lines else "none declared yet for this component."))
    if notes:
        out.write("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    ran = [r for res in results.values() for r in res.results.values() if r is not None]
    if ran:
        out.write("\n## Provenance\n\n" + "".join(f"- {line}\n" for line in environment_lines(environment(ran))))
    reported_only = sum(r.reproduce == "reported-only" for r in spec.rows)
    return TableOutcome(spec, out.getvalue(), len(spec.rows), reproduced, pending, claims, not_run, flags,
                        reported_only)


def _citation(paper: str, ctx: RenderContext) -> str:
    return ctx.papers[paper].citation if paper in ctx.papers else paper


def _detail_keys(spec: TableSpec) -> list[str]:
    keys: list[str] = []
    for row in spec.rows:
        keys += [k for k in row.details if k not in keys]
    return keys


def sweep_rows(spec: TableSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    """Points of a sweep table: x, the paper's value and the reproduced mean, std and number of seeds (None when
    pending; the std None for one seed); the fixed rows by x, then this experiment's point (``current_row`` at
    the configured value)."""
    assert spec.sweep is not None
    sweep = spec.sweep
    rows = {r.id: r for r in spec.rows}
    fixed = sorted(sweep.x.items(), key=lambda kv: kv[1])
    current = [] if sweep.current_row is None else [(sweep.current_row, float(ctx.param(sweep.current_param)))]
    points = []
    for row_id, x in fixed + current:
        agg = row_results(spec, rows[row_id], ctx).aggregate(sweep.metric)
        points.append({"row": row_id, "x": x, "reported": rows[row_id].reported.get(sweep.metric),
                       "reproduced": agg.mean if agg else None, "reproduced_std": agg.std if agg else None,
                       "n": agg.n if agg else 0, "this_experiment": row_id == sweep.current_row})
    return points


def sweep_csv(points: list[dict[str, Any]]) -> str:
    """The sweep's points as CSV; an empty cell where there is no number (no std from one seed)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["row", "x", "reported", "reproduced", "reproduced_std", "n",
                                                "this_experiment"])
    writer.writeheader()
    for p in points:
        writer.writerow({k: ("" if v is None else v) for k, v in p.items()})
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seed_note(points: Sequence[Aggregate | None]) -> str:
    """"error bars: ± std over n seeds" or "one seed: no error bars" for a plot's caption."""
    ns = sorted({a.n for a in points if a is not None})
    if not ns:
        return ""
    if ns == [1]:
        return "one seed per point: no error bars"
    return f"error bars: ± sample std over {'/'.join(map(str, ns))} seeds"


def plot_sweep(spec: TableSpec, points: list[dict[str, Any]], path: Path, title: str) -> None:
    """PNG: two panels over the swept parameter, each with its own plainly labelled axis — the paper's numbers,
    and the reproduced ones (mean ± std over seeds; this experiment's point starred); legends below the data."""
    plt = _pyplot()
    assert spec.sweep is not None
    label = next(c.label for c in spec.columns if c.key == spec.sweep.metric)
    fig, (ax_paper, ax_ours) = plt.subplots(1, 2, figsize=(8, 3.6), dpi=120, sharex=True)
    paper = [p for p in points if p["reported"] is not None]
    ax_paper.plot([p["x"] for p in paper], [p["reported"] for p in paper], "o-", color="tab:blue",
                  label="paper (as printed)")
    ax_paper.set_title("paper", fontsize=9)
    ax_paper.set_ylabel(label)
    ours = [p for p in points if p["reproduced"] is not None and not p["this_experiment"]]
    mine = [p for p in points if p["reproduced"] is not None and p["this_experiment"]]
    if ours:
        ax_ours.errorbar([p["x"] for p in ours], [p["reproduced"] for p in ours],
                         yerr=[p["reproduced_std"] or 0 for p in ours], fmt="s--", color="tab:orange", capsize=3,
                         label="reproduced")
    for p in mine:
        ax_ours.errorbar([p["x"]], [p["reproduced"]], yerr=[p["reproduced_std"] or 0], fmt="*", markersize=13,
                         markerfacecolor="none", markeredgewidth=1.5, color="tab:red", capsize=3, zorder=3,
                         label=f"this experiment ({spec.sweep.current_param} = {p['x']:g})")
    if not (ours or mine):
        ax_ours.text(0.5, 0.5, "reproduction pending", transform=ax_ours.transAxes, ha="center", color="gray")
    note = _seed_note([Aggregate(p["reproduced"], p["reproduced_std"], p["n"]) for p in ours + mine])
    ax_ours.set_title("reproduced" + (f" ({note})" if note else ""), fontsize=9)
    ax_ours.set_ylabel(label)
    for ax in (ax_paper, ax_ours):
        ax.set_xlabel(spec.sweep.x_label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False)
    fig.suptitle(f"{title} Table {spec.table}: {label} against {spec.sweep.x_label}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


@dataclass
class FigureOutcome:
    spec: FigureSpec
    markdown: str
    curves: dict[str, list[tuple[int, Aggregate]]]  # series label → (step, aggregate) by step; [] = pending
    flags: list[str] = field(default_factory=list)  # sanity flags (bench.report.flags)

    @property
    def series_reproduced(self) -> int:
        return sum(bool(c) for c in self.curves.values())


def figure_curves(spec: FigureSpec, ctx: RenderContext) -> dict[str, list[tuple[int, Aggregate]]]:
    """Per series: the figure's metric at each recorded training step, aggregated over seeds."""
    curves = {}
    for series in spec.series:
        e = series.reproduce
        result = load_row_experiment(SLOT_OF[e.dataset or spec.reproduced_on], e, ctx)
        curves[series.label] = result.curve(spec.metric) if result is not None else []
    return curves


def render_figure(spec: FigureSpec, ctx: RenderContext, plot: str) -> FigureOutcome:
    """Markdown of a figure: what the paper shows, the reproduced curves as a step × series table
    (mean ± std over seeds), the plot (``plot``: its path relative to the markdown), sanity flags and notes."""
    curves = figure_curves(spec, ctx)
    title = ctx.title(spec.paper)
    out = io.StringIO()
    out.write(f"# {title} — Figure {spec.figure}\n\n*{spec.caption}*\n\n")
    out.write(f"- Paper: {_citation(spec.paper, ctx)} · {spec.paper_dataset}\n")
    out.write(f"- Reproduced on: slot `{SLOT_OF[spec.reproduced_on]}` = "
              f"`{ctx.slot_datasets.get(SLOT_OF[spec.reproduced_on], '?')}` · profile `{ctx.profile}` · "
              f"seeds {ctx.seeds}\n")
    out.write(f"- Metric: `{spec.metric}` ({spec.y_label}) against {spec.x_label}\n\n")
    if ctx.synthetic:
        out.write(SYNTHETIC_NOTE + "\n\n")
    out.write(f"**The paper's figure:** {spec.reported}\n\n")
    steps = sorted({step for c in curves.values() for step, _ in c})
    labels = [s.label for s in spec.series]
    out.write("| " + " | ".join([spec.x_label, *labels]) + " |\n|" + "---|" * (len(labels) + 1) + "\n")
    for step in steps:
        cells = [str(step)] + [_fmt_agg(dict(curves[label]).get(step), ctx.decimals, spec.metric) for label in labels]
        out.write("| " + " | ".join(cells) + " |\n")
    pending = [f"`{s.reproduce.name}`" for s in spec.series if not curves[s.label]]
    if pending:
        out.write(f"\nPending (no curve recorded yet): {', '.join(pending)}.\n")
    out.write(f"\n![{title} Figure {spec.figure}]({plot})\n")
    flags = curve_flags(curves, spec.metric, ctx.decimals)
    if flags:
        out.write("\n## Sanity flags\n\n" + "".join(f"- {f}\n" for f in flags))
    if spec.notes:
        out.write("\n## Notes\n\n" + "".join(f"- {n}\n" for n in spec.notes))
    return FigureOutcome(spec, out.getvalue(), curves, flags)


#: Marker and line style per series, so that series drawn on top of each other stay distinguishable.
_STYLES = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"))


def plot_figure(outcome: FigureOutcome, path: Path, title: str) -> None:
    """PNG: each series' reproduced curve (mean ± std over seeds) against the training step. Series that coincide
    stay visible: each has its own hollow marker and line style and is nudged sideways by a small step fraction;
    pending series are listed in the legend, which sits outside the data."""
    plt = _pyplot()
    spec = outcome.spec
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
    steps = sorted({s for c in outcome.curves.values() for s, _ in c})
    gap = min((b - a for a, b in zip(steps, steps[1:], strict=False)), default=1)
    drawn = [label for label, c in outcome.curves.items() if c]
    for index, (label, curve) in enumerate(outcome.curves.items()):
        marker, line = _STYLES[index % len(_STYLES)]
        colour = f"C{index}"
        if not curve:
            ax.plot([], [], marker=marker, linestyle="none", color="lightgray", label=f"{label} — no curve yet")
            continue
        shift = (drawn.index(label) - (len(drawn) - 1) / 2) * 0.06 * gap
        ax.errorbar([s + shift for s, _ in curve], [a.mean for _, a in curve], yerr=[a.std or 0 for _, a in curve],
                    marker=marker, linestyle=line, color=colour, markerfacecolor="none", markersize=7,
                    markeredgewidth=1.4, capsize=3, label=label)
    if not drawn:
        ax.text(0.5, 0.5, "reproduction pending", transform=ax.transAxes, ha="center", color="gray")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    note = _seed_note([a for c in outcome.curves.values() for _, a in c])
    ax.set_xlabel(spec.x_label + (f"  ({note})" if note else ""))
    ax.set_ylabel(spec.y_label)
    ax.set_ylim(bottom=0)  # counts and IoUs: the zero stays on the axis, so a fall reads at its true size
    ax.grid(alpha=0.3)
    ax.set_title(f"{title} Figure {spec.figure} (reproduced)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def render_index(outcomes: list[TableOutcome], ctx: RenderContext, reference_md: str,
                 figures: Sequence[FigureOutcome] = (), leaderboard: str | None = None,
                 leaderboard_flags: Sequence[str] = ()) -> str:
    """Markdown of reports/index.md: the counts, a line per table and figure, the sanity flags, the claims that do
    not hold, the reference rows; ``leaderboard``: the leaderboard's path relative to the index, linked first, and
    ``leaderboard_flags`` its sanity flags."""
    out = io.StringIO()
    out.write("# WSIS-Bench — reproduction index\n\n")
    out.write(f"Profile `{ctx.profile}` · slots: "
              + ", ".join(f"`{k}` = `{v}`" for k, v in sorted(ctx.slot_datasets.items()))
              + f" · seeds {ctx.seeds}\n\n")
    if ctx.synthetic:
        out.write(SYNTHETIC_NOTE + "\n\n")
    if leaderboard:
        out.write(f"**[Leaderboard]({leaderboard})**: every method and variant on the same data, points, WSSS maps, "
                  "segmentor and evaluator, with the training-free baselines and the upper bounds as reference "
                  "lines.\n\n")
    verdicts = [o for t in outcomes for _, _, o in t.claims]
    rows = sum(t.rows_total for t in outcomes)
    done = sum(t.rows_reproduced for t in outcomes)
    out.write(f"**{len(outcomes)} tables, {rows} rows: {done} reproduced, "
              f"{sum(t.rows_not_run for t in outcomes)} not run in this profile, "
              f"{sum(t.rows_pending for t in outcomes)} pending, "
              f"{sum(t.rows_reported_only for t in outcomes)} reported only; claims: "
              + ", ".join(f"{verdicts.count(w)} {w}" for w in WORDS) + ".**\n\n")
    out.write(f"{RULE}\n\n")
    if any(t.rows_not_run for t in outcomes):
        out.write("Rows not run in this profile: `bench params use embedded-full && dvc repro` runs every row "
                  "(docs/pipeline.md, Profiles).\n\n")
    out.write("| Paper | Table | Caption | Rows | Reproduced | Not run | Pending "
              "| Claims held / not held / within noise / pending / not testable | Flags |\n")
    out.write("|---|---|---|---|---|---|---|---|---|\n")
    for t in outcomes:
        s = t.spec
        c = [o for _, _, o in t.claims]
        caption = s.caption if len(s.caption) <= 70 else s.caption[:67] + "…"
        out.write(f"| {ctx.title(s.paper)} | [{s.table}]({s.paper}/table{s.table}.md) | {caption} | "
                  f"{t.rows_total} | {t.rows_reproduced} | {t.rows_not_run} | {t.rows_pending} | "
                  + " / ".join(str(c.count(w)) for w in WORDS) + f" | {len(t.flags)} |\n")
    if figures:
        out.write("\n## Figures\n\n| Paper | Figure | Caption | Series | Reproduced | Flags |\n"
                  "|---|---|---|---|---|---|\n")
        for f in figures:
            s = f.spec
            out.write(f"| {ctx.title(s.paper)} | [{s.figure}]({s.paper}/figure{s.figure}.md) | {s.caption} | "
                      f"{len(s.series)} | {f.series_reproduced} | {len(f.flags)} |\n")
    flagged = [(f"[{ctx.title(t.spec.paper)} Table {t.spec.table}]({t.spec.paper}/table{t.spec.table}.md)", flag)
               for t in outcomes for flag in t.flags]
    flagged += [(f"[{ctx.title(f.spec.paper)} Figure {f.spec.figure}]({f.spec.paper}/figure{f.spec.figure}.md)",
                 flag) for f in figures for flag in f.flags]
    flagged += [(f"[Leaderboard]({leaderboard})", flag) for flag in leaderboard_flags if leaderboard]
    if flagged:
        out.write("\n## Sanity flags\n\nResults to look at before trusting a table (bench/report/flags.py: a score "
                  "near zero, a weak row below its training-free baseline, an upper bound below a weak row, a curve "
                  "that collapses to zero). A flag names what to check; it does not say which result is wrong.\n\n")
        out.write("".join(f"- {where}: {flag}\n" for where, flag in flagged))
    not_held_claims = [(t.spec, cl) for t in outcomes for cl, _, o in t.claims if o == "not held"]
    if not_held_claims:
        out.write("\n## Claims that do not hold on this profile\n\n")
        for spec, cl in not_held_claims:
            out.write(f"- {ctx.title(spec.paper)} Table {spec.table}: {cl.text}\n")
    out.write("\n" + reference_md)
    return out.getvalue()
