"""``bench report`` — render every paper table and figure, the index, the reference self-checks and plots."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.commands import COMMANDS, Command, params_argument
from bench.config.loader import flatten
from bench.io import atomic_path, write_text
from bench.methods import PRODUCERS, groups, rows_of, variant_runs
from bench.paths import METRICS, REPORTS, RUNS, SPECS
from bench.report.leaderboard import entries, plot_leaderboard, render_leaderboard
from bench.report.metrics import load_experiment
from bench.report.render import (
    SYNTHETIC_NOTE,
    RenderContext,
    format_value,
    plot_figure,
    plot_sweep,
    render_figure,
    render_index,
    render_table,
    sweep_csv,
    sweep_rows,
)
from bench.report.roles import RunRole, run_roles
from bench.report.specs import experiment_errors, load_figures, load_specs, papers
from bench.report.verdicts import WORDS
from bench.stages.base import declare_stage, run_stage

log = logging.getLogger(__name__)
#: The report reads the method sections only to list their paper-vs-release switches (and the same-run rules).
STAGE = declare_stage("report", "data", "report",
                      more=lambda: tuple(sorted({s for _, p in PRODUCERS.items() for s in p.sections})))
REFERENCE_VARIANTS = ("ground-truth", "oracle-grouping")
#: Metric families whose ground-truth self-check must read exactly 100.
PERCENT_PREFIXES = ("voc.", "coco.", "pq.", "semantic.", "pseudo.mean_iou")


def switches_in_effect(section: BaseModel) -> list[str]:
    """``key = value (meaning)`` for each field of a section marked as a paper-vs-release switch."""
    lines = []
    for name, info in type(section).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "switch" in extra:
            lines.append(f"`{name}` = `{getattr(section, name)}` ({extra['switch']})")
    return lines


def reference_section(slots: dict[str, str], metrics_root: Path) -> tuple[str, list[str]]:
    """Markdown of the reference rows per slot, and the self-check failures (ground truth ≠ 100)."""
    lines = ["## Reference rows (self-check and ceiling)\n",
             "`ground-truth` scores the ground truth as a prediction: every metric must read 100 — a check of the "
             "whole evaluation chain. `oracle-grouping` splits the ground-truth semantic map by nearest centre "
             "point: the ceiling of point grouping.\n"]
    failures: list[str] = []
    for slot, dataset in sorted(slots.items()):
        results = {v: load_experiment(slot, "reference", v, metrics_root) for v in REFERENCE_VARIANTS}
        keys = sorted({k for r in results.values() if r for k in r.per_seed[0]["metrics"]})
        if not keys:
            lines.append(f"\n### Slot `{slot}` (`{dataset}`): not evaluated yet\n")
            continue
        lines.append(f"\n### Slot `{slot}` (`{dataset}`)\n\n| Metric | " + " | ".join(REFERENCE_VARIANTS) + " |\n")
        lines.append("|---|" + "---|" * len(REFERENCE_VARIANTS) + "\n")
        for key in keys:
            cells = []
            for variant, result in results.items():
                agg = result.aggregate(key) if result else None
                cells.append(format_value(agg.mean if agg else None, 2, key))
                if variant == "ground-truth" and key.startswith(PERCENT_PREFIXES) and agg is not None \
                        and not math.isclose(agg.mean, 100.0, abs_tol=1e-9):
                    failures.append(f"{slot}: ground-truth {key} = {agg.mean}")
            lines.append(f"| {key} | " + " | ".join(cells) + " |\n")
    verdict = "**Self-check: PASS** (every ground-truth metric reads 100)." if not failures else \
        "**Self-check: FAIL** — " + "; ".join(failures)
    lines.insert(2, "\n" + verdict + "\n")
    return "".join(lines), failures


def same_runs(params: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(method, variant) → the variant whose run it is under ``params`` (a row that equals another is the same
    run: :attr:`bench.methods.Producer.same_runs`)."""
    flat = flatten(params)
    return {(name, variant): rule.variant for name, producer in PRODUCERS.items()
            for variant, rule in producer.same_runs.items() if flat[rule.param] == rule.value}


def registry_roles() -> tuple[dict[tuple[str, str], RunRole], dict[tuple[str, str], str]]:
    """Every registered run's role (bench.report.roles) and description: the variant's own, or for a segmentor
    row ``<variant>-<arch>`` the source's with the segmentor named."""
    rows = {name: rows_of(name) for name, _ in PRODUCERS.items()}
    roles = run_roles([p for _, p in PRODUCERS.items()], groups(), rows)
    descriptions = {}
    for (method, variant), role in roles.items():
        producer = PRODUCERS.get(method)
        if role.segmentor_of is not None:
            arch = variant.removeprefix(role.segmentor_of + "-")
            source = producer.variants.get(role.segmentor_of, role.segmentor_of)
            descriptions[(method, variant)] = f"segmentor ({arch}) on the train labels of {method}/" \
                                              f"{role.segmentor_of} ({source})"
        else:
            descriptions[(method, variant)] = producer.variants.get(variant, "")
    return roles, descriptions


def _flush_tracking() -> None:
    """The report is the last stage of ``dvc repro``: send the runs every stage buffered to MLflow (a run that
    cannot be sent stays buffered for ``bench tracking flush``; the report does not fail for it)."""
    from bench.tracking import buffered_runs, flush, tracking_uri

    if not buffered_runs():
        return
    sent, errors = flush()
    log.info("tracking: %d run(s) sent to %s", sent, tracking_uri())
    for error in errors:
        log.warning("tracking: still buffered (retry with `bench tracking flush`): %s", error)


def _configure(parser: argparse.ArgumentParser) -> None:
    params_argument(parser)
    parser.add_argument("--specs", default=str(SPECS), help="folder of table specs")
    parser.add_argument("--metrics", default=str(METRICS), help="folder of metrics files")
    parser.add_argument("--out", default=str(REPORTS), help="folder to write the reports into")


def _handle(args: argparse.Namespace) -> int:
    with run_stage(STAGE, params_path=Path(args.params)) as ctx:
        p = ctx.params
        specs = load_specs(Path(args.specs))
        figures = load_figures(Path(args.specs))
        produced = {name: rows_of(name) for name, _ in PRODUCERS.items()}
        errors = experiment_errors(specs, figures, produced)
        if errors:
            raise ValueError("table specs cite experiments no stage produces:\n  " + "\n  ".join(errors))
        section_names = sorted({s for _, prod in PRODUCERS.items() for s in prod.sections})
        sections: dict[str, Any] = {name: getattr(p, name) for name in section_names}
        params_tree = {name: getattr(p, name).model_dump(mode="json") for name in ("data", "report", *section_names)}
        slots = {"voc": p.data.voc.source, "coco": p.data.coco.source}
        roles, descriptions = registry_roles()
        render_ctx = RenderContext(
            profile=ctx.profile, slot_datasets=slots, seeds=list(p.report.seeds),
            decimals=p.report.decimals,
            switches={k: switches_in_effect(v) for k, v in sections.items()}, metrics_root=Path(args.metrics),
            params=params_tree, papers=papers(Path(args.specs).resolve()),
            sections_of={name: prod.sections[0] for name, prod in PRODUCERS.items() if prod.sections},
            runs=variant_runs(p.report.variants), same_runs=same_runs(params_tree),
            external={(name, v): text for name, prod in PRODUCERS.items() for v, text in prod.external.items()},
            roles=roles, runs_root=RUNS,
        )
        out_root = Path(args.out)
        outcomes, figure_outcomes = [], []
        for paper in render_ctx.papers:
            with atomic_path(out_root / paper, directory=True) as tmp:
                for spec in (s for s in specs if s.paper == paper):
                    outcome = render_table(spec, render_ctx)
                    (tmp / f"table{spec.table}.md").write_text(outcome.markdown, encoding="utf-8")
                    outcomes.append(outcome)
                for figure in (f for f in figures if f.paper == paper):
                    stem = f"{figure.paper}_figure{figure.figure}"
                    shown = render_figure(figure, render_ctx, plot=f"../plots/{stem}.png")
                    (tmp / f"figure{figure.figure}.md").write_text(shown.markdown, encoding="utf-8")
                    figure_outcomes.append(shown)
        with atomic_path(out_root / "plots", directory=True) as tmp:
            for spec in specs:
                if spec.sweep is None:
                    continue
                points = sweep_rows(spec, render_ctx)
                stem = f"{spec.paper}_table{spec.table}"
                (tmp / f"{stem}.csv").write_text(sweep_csv(points), encoding="utf-8")
                plot_sweep(spec, points, tmp / f"{stem}.png", render_ctx.title(spec.paper))
            for shown in figure_outcomes:
                plot_figure(shown, tmp / f"{shown.spec.paper}_figure{shown.spec.figure}.png",
                            render_ctx.title(shown.spec.paper))
            found = entries(roles, descriptions, Path(args.metrics), list(slots))
            plot_leaderboard(found, slots, tmp / "leaderboard.png", f"Leaderboard — profile {ctx.profile}")
        board = render_leaderboard(found, profile=ctx.profile, seeds=p.report.seeds, slot_datasets=slots,
                                   runs_root=RUNS, decimals=p.report.decimals, plot="plots/leaderboard.png",
                                   synthetic_note=SYNTHETIC_NOTE if render_ctx.synthetic else "",
                                   titles={name: prod.title for name, prod in PRODUCERS.items()})
        write_text(out_root / "leaderboard.md", board.markdown)
        reference_md, failures = reference_section(slots, Path(args.metrics))
        write_text(out_root / "index.md", render_index(outcomes, render_ctx, reference_md, figure_outcomes,
                                                       leaderboard="leaderboard.md", leaderboard_flags=board.flags))
        write_text(out_root / "reference.md", "# Reference rows\n\n" + reference_md)
        ctx.run.log_metrics({
            "report.tables": len(outcomes),
            "report.rows_reproduced": sum(o.rows_reproduced for o in outcomes),
            **{f"report.claims_{word.replace(' ', '_')}": sum(c == word for o in outcomes for _, _, c in o.claims)
               for word in WORDS},
            "report.sanity_flags": sum(len(o.flags) for o in [*outcomes, *figure_outcomes]) + len(board.flags),
            "report.leaderboard_rows": len(found),
            "report.self_check_failures": len(failures),
        })
        ctx.run.log_artifact(out_root / "index.md")
        log.info("rendered %d tables (%s) into %s", len(outcomes),
                 ", ".join(f"{render_ctx.title(p)}: {sum(o.spec.paper == p for o in outcomes)}"
                           for p in render_ctx.papers), out_root)
        if failures:
            raise ValueError("evaluation self-check failed (ground truth must score 100): " + "; ".join(failures))
    _flush_tracking()
    return 0


COMMANDS.add("report", Command("render reports/<paper>/table<N>.md and figure<N>.md, reports/index.md and plots",
                               _configure, _handle))
