"""Render the paper tables (Reported | Reproduced | Δ), the index with claims, sweep plots, and the
figures that plot a metric over training.

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

from bench.report.metrics import Aggregate, ExperimentResult, load_experiment
from bench.report.specs import COUNT_KEYS, SLOT_OF, Claim, Experiment, FigureSpec, Paper, Row, TableSpec, row_slot

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
    """What every table header needs: profile, datasets of the slots, seeds, commit, switches in effect."""

    profile: str
    slot_datasets: Mapping[str, str]  # slot → dataset source name
    seeds: list[int]
    commit: str
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

    def title(self, paper: str) -> str:
        return self.papers[paper].name if paper in self.papers else paper

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


def _fmt(value: float | None, decimals: int, key: str = "") -> str:
    """A cell: "–" for none / NaN; a whole count (``key`` in :data:`COUNT_KEYS`) without decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in COUNT_KEYS and float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.{decimals}f}"


def _fmt_agg(agg: Aggregate | None, decimals: int, key: str = "") -> str:
    if agg is None:
        return "–"
    text = _fmt(agg.mean, decimals, key)
    return f"{text} ± {_fmt(agg.std, decimals)}" if agg.n > 1 else text


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
    """``held`` / ``not held`` / ``pending`` (a side has no number)."""
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
    claims: list[tuple[Claim, str, str]]  # claim, on reported numbers, on reproduced numbers
    rows_not_run: int = 0  # implemented, not run by the active profile (or needing a user's input)


def render_table(spec: TableSpec, ctx: RenderContext) -> TableOutcome:
    results = {row.id: row_results(spec, row, ctx) for row in spec.rows}
    slots = sorted({row_slot(spec, e) for r in spec.rows for e in r.sources([c.key for c in spec.columns])}
                   or {SLOT_OF[spec.reproduced_on]})
    commits = set().union(*(res.commits for res in results.values()))
    out = io.StringIO()
    title = ctx.title(spec.paper)
    out.write(f"# {title} — Table {spec.table}\n\n*{spec.caption}*\n\n")
    out.write(f"- Paper: {_citation(spec.paper, ctx)} · {spec.paper_dataset}\n")
    out.write("- Reproduced on: " + ", ".join(f"slot `{s}` = `{ctx.slot_datasets.get(s, '?')}`" for s in slots)
              + f" · profile `{ctx.profile}` · seeds {ctx.seeds}\n")
    out.write(f"- Rendered at commit `{ctx.commit}`; metrics from commit(s) "
              + (", ".join(f"`{c}`" for c in sorted(commits)) or "–") + "\n\n")
    if ctx.profile.startswith("embedded") or ctx.profile == "smoke":
        out.write(SYNTHETIC_NOTE + "\n\n")
    header = ["Row"] + [d for d in _detail_keys(spec)]
    for col in spec.columns:
        header += [f"{col.label} reported", f"{col.label} reproduced", "Δ"]
    header.append("Status")
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    reproduced = pending = not_run = 0
    for row in spec.rows:
        result = results[row.id]
        status = result.status
        reproduced += status == "reproduced"
        pending += status.startswith(("pending", "partial"))
        not_run += status.startswith(("not run", "needs"))
        label = f"{row.group} · {row.label}" if row.group else row.label
        if spec.sweep is not None and spec.sweep.current_row == row.id:
            label += f" (`{spec.sweep.current_param}` = {ctx.param(spec.sweep.current_param)})"
        cells = [label] + [row.details.get(k, "") for k in _detail_keys(spec)]
        for col in spec.columns:
            rep = row.reported.get(col.key)
            agg = result.aggregate(col.key)
            delta = None if rep is None or agg is None else agg.mean - rep
            cells += [_fmt(rep, ctx.decimals, col.key), _fmt_agg(agg, ctx.decimals, col.key),
                      "" if delta is None else f"{delta:+.{ctx.decimals}f}"]
        cells.append(status)
        out.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    if any(res.aggregate(c.key) is not None and res.aggregate(c.key).n > 1
           for res in results.values() for c in spec.columns):
        out.write("\nReproduced cells with several seeds show mean ± sample standard deviation.\n")
    claims = []
    if spec.claims:
        out.write("\n## Claims\n\n| Claim | Paper's numbers | Reproduced |\n|---|---|---|\n")
        rows = {r.id: r for r in spec.rows}
        for claim in spec.claims:
            harness_side = not (rows[claim.left].reported and rows[claim.right].reported)
            on_paper = NOT_IN_PAPER if harness_side else judge(
                claim, rows[claim.left].reported.get(claim.metric), rows[claim.right].reported.get(claim.metric))
            lagg = results[claim.left].aggregate(claim.metric)
            ragg = results[claim.right].aggregate(claim.metric)
            on_ours = judge(claim, lagg.mean if lagg else None, ragg.mean if ragg else None)
            claims.append((claim, on_paper, on_ours))
            out.write(f"| {claim.text} | {on_paper} | {on_ours} |\n")
    notes = list(spec.notes)
    for section in sorted({ctx.sections_of[r.reproduce.method] for r in spec.rows
                           if isinstance(r.reproduce, Experiment) and ctx.sections_of.get(r.reproduce.method)}):
        lines = ctx.switches.get(section, [])
        notes.append(f"Paper-vs-release switches in effect (`{section}`): "
                     + ("; ".join(lines) if lines else "none declared yet for this component."))
    if notes:
        out.write("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    return TableOutcome(spec, out.getvalue(), len(spec.rows), reproduced, pending, claims, not_run)


def _citation(paper: str, ctx: RenderContext) -> str:
    return ctx.papers[paper].citation if paper in ctx.papers else paper


def _detail_keys(spec: TableSpec) -> list[str]:
    keys: list[str] = []
    for row in spec.rows:
        keys += [k for k in row.details if k not in keys]
    return keys


def sweep_rows(spec: TableSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    """Points of a sweep table: x, the paper's value and the reproduced mean/std (None if pending);
    the fixed rows by x, then this experiment's point (``current_row`` at the configured value)."""
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
                       "this_experiment": row_id == sweep.current_row})
    return points


def sweep_csv(points: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["row", "x", "reported", "reproduced", "reproduced_std",
                                                "this_experiment"])
    writer.writeheader()
    for p in points:
        writer.writerow({k: ("" if v is None else v) for k, v in p.items()})
    return buffer.getvalue()


def plot_sweep(spec: TableSpec, points: list[dict[str, Any]], path: Path, title: str) -> None:
    """PNG: the paper's curve and the reproduced points (mean ± std) against the swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert spec.sweep is not None
    fig, ax_paper = plt.subplots(figsize=(5, 3.4), dpi=120)
    paper = [p for p in points if p["reported"] is not None]
    ax_paper.plot([p["x"] for p in paper], [p["reported"] for p in paper], "o-", color="tab:blue",
                  label="paper (left axis)")
    ax_paper.set_xlabel(spec.sweep.x_label)
    label = next(c.label for c in spec.columns if c.key == spec.sweep.metric)
    ax_paper.set_ylabel(f"{label} — paper", color="tab:blue")
    ours = [p for p in points if p["reproduced"] is not None and not p["this_experiment"]]
    mine = [p for p in points if p["reproduced"] is not None and p["this_experiment"]]
    ax_ours = ax_paper.twinx()
    ax_ours.set_ylabel(f"{label} — reproduced", color="tab:orange")
    if ours:
        ax_ours.errorbar([p["x"] for p in ours], [p["reproduced"] for p in ours],
                         yerr=[p["reproduced_std"] or 0 for p in ours], fmt="s--", color="tab:orange",
                         capsize=3, label="reproduced (right axis)")
    for p in mine:
        ax_ours.errorbar([p["x"]], [p["reproduced"]], yerr=[p["reproduced_std"] or 0], fmt="*", markersize=12,
                         color="tab:red", capsize=3, label=f"this experiment ({spec.sweep.current_param} = {p['x']:g})")
    if ours or mine:
        ax_ours.legend(loc="lower right", fontsize=7)
    else:
        ax_ours.text(0.5, 0.5, "reproduction pending", transform=ax_ours.transAxes, ha="center", color="gray")
    ax_paper.set_title(f"{title} Table {spec.table}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class FigureOutcome:
    spec: FigureSpec
    markdown: str
    curves: dict[str, list[tuple[int, Aggregate]]]  # series label → (step, aggregate) by step; [] = pending

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
    (mean ± std over seeds), the plot (``plot``: its path relative to the markdown) and the notes."""
    curves = figure_curves(spec, ctx)
    title = ctx.title(spec.paper)
    out = io.StringIO()
    out.write(f"# {title} — Figure {spec.figure}\n\n*{spec.caption}*\n\n")
    out.write(f"- Paper: {_citation(spec.paper, ctx)} · {spec.paper_dataset}\n")
    out.write(f"- Reproduced on: slot `{SLOT_OF[spec.reproduced_on]}` = "
              f"`{ctx.slot_datasets.get(SLOT_OF[spec.reproduced_on], '?')}` · profile `{ctx.profile}` · "
              f"seeds {ctx.seeds} · rendered at commit `{ctx.commit}`\n")
    out.write(f"- Metric: `{spec.metric}` ({spec.y_label}) against {spec.x_label}\n\n")
    if ctx.profile.startswith("embedded") or ctx.profile == "smoke":
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
    if spec.notes:
        out.write("\n## Notes\n\n" + "".join(f"- {n}\n" for n in spec.notes))
    return FigureOutcome(spec, out.getvalue(), curves)


def plot_figure(outcome: FigureOutcome, path: Path, title: str) -> None:
    """PNG: each series' reproduced curve (mean ± std over seeds) against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = outcome.spec
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for label, curve in outcome.curves.items():
        if curve:
            ax.errorbar([s for s, _ in curve], [a.mean for _, a in curve], yerr=[a.std for _, a in curve],
                        fmt="o-", capsize=3, label=label)
    if outcome.series_reproduced:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "reproduction pending", transform=ax.transAxes, ha="center", color="gray")
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel(spec.y_label)
    ax.set_title(f"{title} Figure {spec.figure} (reproduced)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_index(outcomes: list[TableOutcome], ctx: RenderContext, reference_md: str,
                 figures: Sequence[FigureOutcome] = ()) -> str:
    out = io.StringIO()
    out.write("# WSIS-Bench — reproduction index\n\n")
    out.write(f"Profile `{ctx.profile}` · slots: "
              + ", ".join(f"`{k}` = `{v}`" for k, v in sorted(ctx.slot_datasets.items()))
              + f" · seeds {ctx.seeds} · commit `{ctx.commit}`\n\n")
    if ctx.profile.startswith("embedded") or ctx.profile == "smoke":
        out.write(SYNTHETIC_NOTE + "\n\n")
    held = sum(o == "held" for t in outcomes for _, _, o in t.claims)
    not_held = sum(o == "not held" for t in outcomes for _, _, o in t.claims)
    pend = sum(o == "pending" for t in outcomes for _, _, o in t.claims)
    rows = sum(t.rows_total for t in outcomes)
    done = sum(t.rows_reproduced for t in outcomes)
    out.write(f"**{len(outcomes)} tables, {rows} rows: {done} reproduced, "
              f"{sum(t.rows_not_run for t in outcomes)} not run in this profile, "
              f"{sum(t.rows_pending for t in outcomes)} pending; claims: {held} held, {not_held} not held, "
              f"{pend} pending.**\n\n")
    if any(t.rows_not_run for t in outcomes):
        out.write("Rows not run in this profile: `bench params use embedded-full && dvc repro` runs every row "
                  "(docs/pipeline.md, Profiles).\n\n")
    out.write("| Paper | Table | Caption | Rows | Reproduced | Not run | Pending "
              "| Claims held / not held / pending |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for t in outcomes:
        s = t.spec
        c = [o for _, _, o in t.claims]
        caption = s.caption if len(s.caption) <= 70 else s.caption[:67] + "…"
        out.write(f"| {ctx.title(s.paper)} | [{s.table}]({s.paper}/table{s.table}.md) | {caption} | "
                  f"{t.rows_total} | {t.rows_reproduced} | {t.rows_not_run} | {t.rows_pending} | "
                  f"{c.count('held')} / {c.count('not held')} / {c.count('pending')} |\n")
    if figures:
        out.write("\n## Figures\n\n| Paper | Figure | Caption | Series | Reproduced |\n|---|---|---|---|---|\n")
        for f in figures:
            s = f.spec
            out.write(f"| {ctx.title(s.paper)} | [{s.figure}]({s.paper}/figure{s.figure}.md) | {s.caption} | "
                      f"{len(s.series)} | {f.series_reproduced} |\n")
    not_held_claims = [(t.spec, cl) for t in outcomes for cl, _, o in t.claims if o == "not held"]
    if not_held_claims:
        out.write("\n## Claims that do not hold on this profile\n\n")
        for spec, cl in not_held_claims:
            out.write(f"- {ctx.title(spec.paper)} Table {spec.table}: {cl.text}\n")
    out.write("\n" + reference_md)
    return out.getvalue()
