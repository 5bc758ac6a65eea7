"""The leaderboard (reports/leaderboard.md and plots/leaderboard.png): the comparison no paper gives — every
registered method and variant that has metrics, on the same data, points, WSSS maps, segmentor and evaluator.

Rows come from the method registry (bench/methods.py, through :mod:`bench.report.roles`) and the metrics folder:
a method that lands (Point2Mask, JTSM) appears as soon as its runs are scored, with no list to edit. One row per
weakly supervised ``method/variant``; one column per headline metric per slot (VOC-like mAP25/50/70/75,
COCO-like AP/AP50/PQ, those some run records); each cell the mean ± sample std over seeds with their number n.
The training-free baselines and the upper bounds are reference lines, in their own table and as lines in the plot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report.flags import ScoredRow, row_flags
from bench.report.metrics import Aggregate, ExperimentResult, aggregate, load_experiment
from bench.report.provenance import environment, environment_lines, train_seconds
from bench.report.roles import BASELINE, UPPER_BOUND, WEAK, RunRole

#: Slot → its headline metrics (key, printed label), in column order.
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    "voc": (("voc.mAP25", "mAP25"), ("voc.mAP50", "mAP50"), ("voc.mAP70", "mAP70"), ("voc.mAP75", "mAP75")),
    "coco": (("coco.segm.AP", "AP"), ("coco.segm.AP50", "AP50"), ("pq.PQ", "PQ")),
}
#: Slot → the metrics the rows are ranked by and the plot shows (the first one a run records).
RANKED_BY: dict[str, tuple[str, ...]] = {"voc": ("voc.mAP50",), "coco": ("pq.PQ", "coco.segm.AP")}
ROLE_TEXT = {BASELINE: "training-free baseline", UPPER_BOUND: "upper bound"}


@dataclass(frozen=True)
class Entry:
    """One ``method/variant``: its role and, per slot it ran on, its seeds' metrics."""

    method: str
    variant: str
    role: RunRole
    description: str
    results: Mapping[str, ExperimentResult]  # slot → metrics over seeds

    @property
    def name(self) -> str:
        return f"{self.method}/{self.variant}"

    def score(self, slot: str, key: str) -> Aggregate | None:
        result = self.results.get(slot)
        return result.aggregate(key) if result is not None else None


def entries(roles: Mapping[tuple[str, str], RunRole], descriptions: Mapping[tuple[str, str], str],
            metrics_root: Path, slots: Sequence[str]) -> list[Entry]:
    """Every weak, baseline and upper-bound run of ``roles`` that has metrics on one of ``slots``."""
    found = []
    for (method, variant), role in sorted(roles.items()):
        if role.role not in (WEAK, BASELINE, UPPER_BOUND):
            continue
        results = {slot: r for slot in slots if (r := load_experiment(slot, method, variant, metrics_root))}
        if results:
            found.append(Entry(method, variant, role, descriptions.get((method, variant), ""), results))
    return found


def columns(found: Sequence[Entry], slots: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(slot, key, label)`` of the headline metrics some run records, slot by slot."""
    return [(slot, key, label) for slot in slots for key, label in HEADLINE.get(slot, ())
            if any(e.score(slot, key) is not None for e in found)]


def ranking_key(slot: str, found: Sequence[Entry]) -> str | None:
    """The metric a slot's rows are ranked and plotted by: the first of :data:`RANKED_BY` some weakly supervised
    run records (None when none does)."""
    weak = [e for e in found if e.role.role == WEAK]
    return next((k for k in RANKED_BY.get(slot, ()) if any(e.score(slot, k) is not None for e in weak)), None)


def _cell(agg: Aggregate | None, decimals: int) -> str:
    if agg is None:
        return "–"
    spread = f" ± {agg.std:.{decimals}f}" if agg.std is not None else ""
    return f"{agg.mean:.{decimals}f}{spread} (n={agg.n})"


def _inputs(entry: Entry) -> str:
    """What the run read, from its run.json: the WSSS maps, the point mode, a segmentor row's train labels."""
    parts: list[str] = []
    for slot, result in sorted(entry.results.items()):
        run = result.provenance.get("run", {})
        bits = []
        if run.get("wsss_run"):
            bits.append("maps " + "/".join(Path(run["wsss_run"]).parts[2:4]))
        if run.get("points_mode"):
            bits.append(f"{run['points_mode']} points")
        labels = run.get("labels", {})
        if isinstance(labels, dict) and labels.get("argument"):
            bits.append(f"labels {labels['argument']}")
        if bits:
            parts.append(f"{slot}: " + ", ".join(bits))
    return "; ".join(parts) or "–"


def _time(entry: Entry, runs_root: Path | None, decimals: int) -> str:
    if runs_root is None:
        return "–"
    cells = []
    for slot, result in sorted(entry.results.items()):
        agg = aggregate(list(train_seconds(result, runs_root)))
        if agg is not None:
            places = 0 if agg.mean >= 10 else 1
            cells.append(f"{slot} {agg.mean:.{places}f}" + (f" ± {agg.std:.{places}f}" if agg.std is not None else ""))
    return "; ".join(cells) or "–"


def _provenance(entry: Entry) -> tuple[str, str]:
    commits = sorted({str(r.provenance.get("git_commit", "unknown"))[:10] for r in entry.results.values()})
    profiles = sorted({str(r.provenance.get("profile", "?")) for r in entry.results.values()})
    return ", ".join(f"`{c}`" for c in commits), ", ".join(f"`{p}`" for p in profiles)


def _order(found: Sequence[Entry], slots: Sequence[str]) -> list[Entry]:
    """Ranked by the first slot's ranking metric (best first), then the next slot's; rows without either last."""
    keys = [(slot, ranking_key(slot, found)) for slot in slots]

    def sort_key(entry: Entry) -> tuple[float, ...]:
        values = []
        for slot, key in keys:
            agg = entry.score(slot, key) if key else None
            values.append(-agg.mean if agg is not None else float("inf"))
        return (*values,)

    return sorted(found, key=lambda e: (*sort_key(e), e.name))


def _table(found: Sequence[Entry], cols: Sequence[tuple[str, str, str]], runs_root: Path | None, decimals: int,
           *, first: str, titles: Mapping[str, str]) -> str:
    header = [first, "Run", *(f"{slot} {label}" for slot, _, label in cols),
              "Train s", "Inputs", "Scored at commit", "Profile"]
    out = io.StringIO()
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for entry in found:
        lead = ROLE_TEXT.get(entry.role.role, titles.get(entry.method, entry.method))
        cells = [lead, f"`{entry.name}`" + (f" — {entry.description}" if entry.description else "")]
        cells += [_cell(entry.score(slot, key), decimals) for slot, key, _ in cols]
        commit, profile = _provenance(entry)
        cells += [_time(entry, runs_root, decimals), _inputs(entry), commit, profile]
        out.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    return out.getvalue()


@dataclass
class Leaderboard:
    markdown: str
    entries: list[Entry]
    flags: list[str]


def leaderboard_flags(found: Sequence[Entry], cols: Sequence[tuple[str, str, str]], decimals: int) -> list[str]:
    """The sanity flags of the leaderboard (bench.report.flags), slot by slot, a weak row against its own
    method's baselines."""
    flags = []
    for slot in dict.fromkeys(s for s, _, _ in cols):
        labels = {key: f"{slot} {label}" for s, key, label in cols if s == slot}
        rows = [ScoredRow(f"`{e.name}`", e.role.role, e.role.kind, slot,
                          {k: a for k in labels if (a := e.score(slot, k)) is not None}, e.method)
                for e in found if slot in e.results]
        flags += row_flags(rows, labels, decimals, same_method=True)
    return flags


def render_leaderboard(found: Sequence[Entry], *, profile: str, seeds: Sequence[int],
                       slot_datasets: Mapping[str, str], runs_root: Path | None, decimals: int,
                       synthetic_note: str = "", plot: str | None = None,
                       titles: Mapping[str, str] | None = None) -> Leaderboard:
    """Markdown of the leaderboard: the setting, the ranked weak rows, the reference lines, sanity flags and the
    runs' provenance; ``plot`` (the PNG's path relative to the markdown) is embedded when given; ``titles``:
    method → the name printed for it (the registry's title)."""
    titles = titles or {}
    slots = [s for s in HEADLINE if s in slot_datasets]
    cols = columns(found, slots)
    weak = _order([e for e in found if e.role.role == WEAK], slots)
    reference = _order([e for e in found if e.role.role != WEAK], slots)
    out = io.StringIO()
    out.write("# WSIS-Bench — leaderboard\n\n")
    out.write("Every method and variant the harness runs, on the same data, the same sampled points, the same WSSS "
              "maps where a method reads them, the same segmentor for the \"labels → segmentor\" rows and the same "
              "evaluator: the comparison no paper gives. Rows are the method registry's runs that have metrics; a "
              "method appears when its runs are scored.\n\n")
    out.write(f"- Profile `{profile}` · seeds {list(seeds)} · "
              + ", ".join(f"slot `{s}` = `{slot_datasets[s]}`" for s in slots) + "\n")
    ranked = [f"`{s}` by {next(lab for sl, k, lab in cols if sl == s and k == key)}"
              for s in slots if (key := ranking_key(s, found))]
    out.write("- Cells: mean ± sample standard deviation over seeds (n = the seeds that ran; no ± from one seed). "
              + ("Ranked " + ", then ".join(ranked) + ", best first. " if ranked else "")
              + "Train s: training seconds per seed (timing.json). Inputs: what the run read (run.json). Scored at "
              "commit: the commit the evaluate stage ran at (the runs do not record the commit they trained at).\n\n")
    if synthetic_note:
        out.write(synthetic_note + "\n\n")
    if plot:
        out.write(f"![Leaderboard]({plot})\n\n")
    out.write("## Weakly supervised methods\n\n")
    out.write(_table(weak, cols, runs_root, decimals, first="Method", titles=titles) if weak and cols
              else "No run scored yet.\n")
    out.write("\n## Reference lines\n\nTraining-free baselines (what a method must beat) and upper bounds (full "
              "supervision, oracle grouping).\n\n")
    out.write(_table(reference, cols, runs_root, decimals, first="Role", titles=titles) if reference and cols
              else "No reference run scored yet.\n")
    missing = [f"{s} {label}" for s in slots for key, label in HEADLINE[s] if (s, key, label) not in cols]
    if missing:
        out.write(f"\nNo run records {', '.join(missing)} yet.\n")
    flags = leaderboard_flags(found, cols, decimals)
    if flags:
        out.write("\n## Sanity flags\n\n" + "".join(f"- {f}\n" for f in flags))
    all_results = [r for e in found for r in e.results.values()]
    if all_results:
        lines = environment_lines(environment(all_results))
        out.write("\n## Provenance\n\n" + "".join(f"- {line}\n" for line in lines))
        evaluators = {str(sorted(r.provenance.get("eval_params", {}).items())) for r in all_results}
        if len(evaluators) > 1:
            out.write(f"- **The runs were scored under {len(evaluators)} different evaluator settings** "
                      "(`eval` params): the rows are not comparable until they are re-scored.\n")
    return Leaderboard(out.getvalue(), list(found), flags)


def plot_leaderboard(found: Sequence[Entry], slot_datasets: Mapping[str, str], path: Path, title: str) -> None:
    """PNG: per slot, one panel of its ranking metric — each weak row a dot with its seeds' std as the error bar,
    the baselines and upper bounds as labelled vertical lines; legends outside the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots = [s for s in HEADLINE if s in slot_datasets and ranking_key(s, found)]
    if not slots:
        fig, ax = plt.subplots(figsize=(6, 2), dpi=120)
        ax.text(0.5, 0.5, "no run scored yet", ha="center", va="center", color="gray")
        ax.set_axis_off()
        fig.savefig(path)
        plt.close(fig)
        return
    panels = []
    for slot in slots:
        key = ranking_key(slot, found)
        assert key is not None
        weak = [e for e in _order([e for e in found if e.role.role == WEAK], [slot]) if e.score(slot, key)]
        panels.append((slot, key, weak[::-1], [e for e in found if e.role.role != WEAK and e.score(slot, key)]))
    height = 1.6 + 0.4 * sum(max(len(w), 1) for _, _, w, _ in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, height), dpi=120, squeeze=False,
                             gridspec_kw={"height_ratios": [max(len(w), 1) for _, _, w, _ in panels]})
    styles = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
    for ax, (slot, key, weak, refs) in zip(axes[:, 0], panels, strict=True):
        label = next(lab for k, lab in HEADLINE[slot] if k == key)
        aggs = [e.score(slot, key) for e in weak]
        ax.errorbar([a.mean for a in aggs if a], range(len(weak)), xerr=[a.std or 0 for a in aggs if a], fmt="o",
                    color="tab:blue", capsize=3, label="weakly supervised run (± std over seeds)")
        ax.set_yticks(range(len(weak)), [f"{e.name} (n={a.n})" for e, a in zip(weak, aggs, strict=True) if a],
                      fontsize=7)
        for index, ref in enumerate(refs):
            agg = ref.score(slot, key)
            assert agg is not None
            colour = "tab:green" if ref.role.role == BASELINE else "tab:red"
            ax.axvline(agg.mean, color=colour, linestyle=styles[index % len(styles)], linewidth=1.3,
                       label=f"{ROLE_TEXT[ref.role.role]}: {ref.name} = {agg.mean:.1f}")
        ax.set_xlabel(f"{label} on slot {slot} ({slot_datasets[slot]}), percent")
        ax.set_xlim(0, 100)
        ax.set_ylim(-0.7, max(len(weak), 1) - 0.3)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    axes[0, 0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
