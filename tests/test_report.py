"""Report rendering: the paper's number beside the reproduced one (Δ on real-data profiles), seeds as mean ± std,
noise-aware claims, reported-only rows in one line, sweeps, self-check."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.commands.report import reference_section
from bench.report.render import RenderContext, judge, render_index, render_table, sweep_rows
from bench.report.specs import Claim, TableSpec, papers

SPECS = Path(__file__).resolve().parents[1] / "reports" / "specs"

SPEC = {
    "paper": "p2seg", "table": "5", "caption": "Hard pixel ratio.", "paper_dataset": "VOC val",
    "reproduced_on": "synth-voc",
    "columns": [{"key": "voc.mAP50", "label": "mAP50"}],
    "rows": [
        {"id": "a", "label": "ratio 0.1", "reported": {"voc.mAP50": 52.0},
         "reproduce": {"method": "p2seg", "variant": "a"}},
        {"id": "b", "label": "ratio 0.2", "reported": {"voc.mAP50": 50.8},
         "reproduce": {"method": "p2seg", "variant": "b"}},
        {"id": "c", "label": "Other method", "reported": {"voc.mAP50": 40.0}, "reproduce": "reported-only"},
    ],
    "claims": [{"text": "a beats b", "left": "a", "op": ">", "right": "b", "metric": "voc.mAP50"}],
    "sweep": {"x_label": "ratio", "metric": "voc.mAP50", "x": {"a": 0.1, "b": 0.2}},
}


def _metrics(root: Path, variant: str, seed: int, value: float, method: str = "p2seg") -> None:
    path = root / "voc" / method / variant / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"voc.mAP50": value}, "provenance": {"git_commit": "abc"}}))


def _ctx(root: Path, profile: str = "embedded") -> RenderContext:
    return RenderContext(profile=profile, slot_datasets={"voc": "synth-voc", "coco": "synth-coco"}, seeds=[0, 1],
                         decimals=1, switches={}, metrics_root=root, papers=papers(SPECS))


def test_cells_show_reported_reproduced_and_delta_on_a_real_data_profile(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    md = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path, "voc")).markdown
    assert "| Row | mAP50 paper | mAP50 reproduced | Δ | Status |" in md
    assert "| ratio 0.1 | 52.0 | 60.0 | +8.0 | reproduced |" in md
    assert "| ratio 0.2 | 50.8 | – |  | pending (p2seg/b) |" in md


def test_a_synthetic_profile_has_no_delta_column(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    md = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path)).markdown
    assert "| Row | mAP50 paper | mAP50 reproduced | Status |" in md
    assert "| ratio 0.1 | 52.0 | 60.0 | reproduced |" in md and "Δ |" not in md


def test_reported_only_rows_are_one_line_that_cites_them(tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["rows"].append({"id": "d", "label": "Another [7]", "reported": {}, "reproduce": "reported-only"})
    md = render_table(TableSpec.model_validate(spec), _ctx(tmp_path)).markdown
    assert "| Other method |" not in md
    assert "Reported only — methods the harness does not run, the paper's numbers (mAP50): Other method (40.0); " \
           "Another [7] (–).\n" in md


def test_a_row_the_profile_does_not_run_says_so_and_how_to_run_it(tmp_path):
    ctx = replace(_ctx(tmp_path), sections_of={"p2seg": "mdm"}, runs={("voc", "p2seg"): {"a"}})
    md = render_table(TableSpec.model_validate(SPEC), ctx).markdown
    assert "| ratio 0.1 | 52.0 | – | pending (p2seg/a) |" in md  # run by the profile, no metrics yet
    assert "| ratio 0.2 | 50.8 | – | not run in this profile: `bench params use embedded-full` |" in md


def test_a_row_that_is_another_rows_run_reads_that_runs_metrics(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    ctx = replace(_ctx(tmp_path), sections_of={"p2seg": "mdm"}, runs={("voc", "p2seg"): {"a"}},
                  same_runs={("p2seg", "b"): "a"})
    md = render_table(TableSpec.model_validate(SPEC), ctx).markdown
    assert "| ratio 0.2 | 50.8 | 60.0 | reproduced |" in md


def test_a_row_needing_a_users_input_names_it(tmp_path):
    ctx = replace(_ctx(tmp_path), sections_of={"p2seg": "mdm"}, external={("p2seg", "b"): "your maps"})
    md = render_table(TableSpec.model_validate(SPEC), ctx).markdown
    assert "| ratio 0.2 | 50.8 | – | needs external input: your maps |" in md


def test_the_header_cites_the_paper_by_title_and_arxiv_id(tmp_path):
    md = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path)).markdown
    assert md.startswith("# P2Seg — Table 5")
    assert "- Paper: P2Seg: \"P2Seg: Pointly-supervised Segmentation via Mutual Distillation\" (Wang et al., 2024, " \
           "arXiv:2401.09709) · VOC val" in md
    assert "shared/" not in md


def test_several_seeds_show_mean_and_sample_std(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    _metrics(tmp_path, "a", 1, 62.0)
    md = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path, "voc")).markdown
    # mean 61, sample std sqrt(((60-61)^2 + (62-61)^2) / 1) = 1.414
    assert "| ratio 0.1 | 52.0 | 61.0 ± 1.4 | +9.0 | reproduced |" in md


def test_claims_are_judged_on_paper_and_reproduced_numbers(tmp_path):
    _metrics(tmp_path, "a", 0, 40.0)
    _metrics(tmp_path, "b", 0, 45.0)
    outcome = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path))
    assert [(on_paper, ours) for _, on_paper, ours in outcome.claims] == [("held", "not held")]
    assert "| a beats b | held | not held (single seed) · Δ -5.0 |" in outcome.markdown
    assert "|Δ| ≤ 2·SE is *within noise*" in outcome.markdown  # the rule is stated under the claims


def test_a_claim_on_a_harness_row_is_not_judged_on_the_papers_numbers(tmp_path):
    harness_row = {"id": "h", "label": "harness baseline", "reported": {},
                   "reproduce": {"method": "p2seg", "variant": "h"}}
    spec = {**SPEC, "rows": [*SPEC["rows"], harness_row],
            "claims": [{"text": "a beats the baseline", "left": "a", "op": ">", "right": "h", "metric": "voc.mAP50"}]}
    _metrics(tmp_path, "a", 0, 40.0)
    _metrics(tmp_path, "h", 0, 30.0)
    outcome = render_table(TableSpec.model_validate(spec), _ctx(tmp_path))
    assert [(on_paper, ours) for _, on_paper, ours in outcome.claims] == [("– (harness row)", "held")]


def test_a_claim_with_a_missing_side_is_pending():
    claim = Claim(text="x", left="a", op=">", right="b", metric="voc.mAP50")
    assert judge(claim, 1.0, None) == "pending"
    assert judge(Claim(text="x", left="a", op="~", right="b", metric="m", tolerance=1.0), 41.8, 41.0) == "held"


def test_synthetic_profiles_carry_the_not_comparable_note_and_paper_profiles_do_not(tmp_path):
    spec = TableSpec.model_validate(SPEC)
    assert "not comparable" in render_table(spec, _ctx(tmp_path, "embedded")).markdown
    assert "not comparable" not in render_table(spec, _ctx(tmp_path, "voc")).markdown


def test_header_names_profile_dataset_and_seeds_and_the_provenance_what_the_runs_recorded(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    md = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path)).markdown
    assert "slot `voc` = `synth-voc` · profile `embedded` · seeds [0, 1]\n" in md
    assert "## Provenance\n\n- Recorded by the runs: commit `abc`.\n- Not recorded by the runs (run.json / the " \
           "metrics' provenance): dirty tree, python, torch, timm, numpy, device, AMP, CPU threads, host.\n" in md


def test_sweep_points_are_ordered_by_x_with_pending_points_empty(tmp_path):
    _metrics(tmp_path, "b", 0, 48.0)
    points = sweep_rows(TableSpec.model_validate(SPEC), _ctx(tmp_path))
    assert [(p["x"], p["reported"], p["reproduced"]) for p in points] == [(0.1, 52.0, None), (0.2, 50.8, 48.0)]


def _spec_with_current_row() -> TableSpec:
    spec = json.loads(json.dumps(SPEC))
    spec["rows"].append({"id": "now", "label": "This experiment", "reported": {},
                         "reproduce": {"method": "p2seg", "variant": "default"}})
    spec["sweep"].update({"current_row": "now", "current_param": "mdm.hard_pixel_ratio"})
    return TableSpec.model_validate(spec)


def test_the_current_row_is_its_own_sweep_point_at_the_configured_value(tmp_path):
    _metrics(tmp_path, "default", 0, 47.0)
    ctx = replace(_ctx(tmp_path), params={"mdm": {"hard_pixel_ratio": 0.4}})
    points = sweep_rows(_spec_with_current_row(), ctx)
    assert [(p["row"], p["x"], p["reproduced"], p["this_experiment"]) for p in points] == [
        ("a", 0.1, None, False), ("b", 0.2, None, False), ("now", 0.4, 47.0, True)]
    assert "This experiment (`mdm.hard_pixel_ratio` = 0.4) | – | 47.0 |" in render_table(_spec_with_current_row(),
                                                                                        ctx).markdown


def test_a_sweep_current_row_needs_its_param_and_may_not_be_a_fixed_point():
    spec = json.loads(json.dumps(SPEC))
    spec["sweep"]["current_row"] = "c"
    with pytest.raises(ValueError, match="current_row and current_param"):
        TableSpec.model_validate(spec)
    spec["sweep"].update({"current_row": "a", "current_param": "mdm.hard_pixel_ratio"})
    with pytest.raises(ValueError, match="must not be one of the fixed x rows"):
        TableSpec.model_validate(spec)


def test_index_counts_rows_and_claims(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    _metrics(tmp_path, "b", 0, 45.0)
    outcome = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path))
    index = render_index([outcome], _ctx(tmp_path), "")
    assert "**1 tables, 3 rows: 2 reproduced, 0 not run in this profile, 0 pending, 1 reported only; claims: 1 held, " \
           "0 not held, 0 within noise, 0 pending, 0 not testable here.**" in index


def test_index_counts_rows_the_profile_does_not_run_apart_from_pending_ones(tmp_path):
    _metrics(tmp_path, "a", 0, 60.0)
    ctx = replace(_ctx(tmp_path), sections_of={"p2seg": "mdm"}, runs={("voc", "p2seg"): {"a"}})
    index = render_index([render_table(TableSpec.model_validate(SPEC), ctx)], ctx, "")
    assert "3 rows: 1 reproduced, 1 not run in this profile, 0 pending" in index
    assert "| P2Seg | [5](p2seg/table5.md) | Hard pixel ratio. | 3 | 1 | 1 | 0 |" in index


@pytest.mark.parametrize("value, verdict", [(100.0, "PASS"), (99.99999999999997, "PASS"), (99.5, "FAIL")])
def test_reference_self_check_requires_100(tmp_path, value, verdict):
    _metrics(tmp_path, "ground-truth", 0, value, method="reference")
    text, failures = reference_section({"voc": "synth-voc"}, tmp_path)
    assert f"Self-check: {verdict}" in text
    assert bool(failures) == (verdict == "FAIL")


SPEC_WITH_COLUMN_SOURCE = {
    "paper": "bestie", "table": "4", "caption": "WSSS quality.", "paper_dataset": "VOC val",
    "reproduced_on": "synth-voc",
    "columns": [{"key": "semantic.mIoU", "label": "mIoU"}, {"key": "voc.mAP50", "label": "mAP50"}],
    "rows": [{"id": "pam", "label": "PAM maps", "reported": {"semantic.mIoU": 70.0, "voc.mAP50": 41.8},
              "reproduce": {"method": "bestie", "variant": "image"},
              "columns_from": {"semantic.mIoU": {"method": "wsss", "variant": "pam"}}}],
}


def _write(root: Path, method: str, variant: str, metrics: dict) -> None:
    path = root / "voc" / method / variant / "seed0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "provenance": {"git_commit": "abc"}}))


def test_a_column_taken_from_another_experiment_reads_that_experiments_metrics(tmp_path):
    _write(tmp_path, "wsss", "pam", {"semantic.mIoU": 55.0})
    _write(tmp_path, "bestie", "image", {"voc.mAP50": 30.0, "semantic.mIoU": 99.0})
    md = render_table(TableSpec.model_validate(SPEC_WITH_COLUMN_SOURCE), _ctx(tmp_path, "voc")).markdown
    # mIoU from wsss/pam (55.0), not the row's own semantic.mIoU (99.0); mAP50 from bestie/image
    assert "| PAM maps | 70.0 | 55.0 | -15.0 | 41.8 | 30.0 | -11.8 | reproduced |" in md


def test_a_row_with_only_some_sources_run_is_partial(tmp_path):
    _write(tmp_path, "wsss", "pam", {"semantic.mIoU": 55.0})
    outcome = render_table(TableSpec.model_validate(SPEC_WITH_COLUMN_SOURCE), _ctx(tmp_path))
    assert "| PAM maps | 70.0 | 55.0 | 41.8 | – | partial (pending: bestie/image) |" in outcome.markdown
    assert (outcome.rows_reproduced, outcome.rows_pending) == (0, 1)


def test_columns_from_must_name_a_column():
    bad = json.loads(json.dumps(SPEC_WITH_COLUMN_SOURCE))
    bad["rows"][0]["columns_from"] = {"pq.PQ": {"method": "wsss", "variant": "pam"}}
    with pytest.raises(ValueError, match="columns_from keys that are not columns: \\['pq.PQ'\\]"):
        TableSpec.model_validate(bad)


FIGURE = {
    "paper": "bestie", "figure": "6", "caption": "TPs over training.", "paper_dataset": "VOC train",
    "reproduced_on": "synth-voc", "metric": "pseudo.tp50", "x_label": "step", "y_label": "TPs",
    "reported": "curves only",
    "series": [{"label": "refined", "reproduce": {"method": "bestie", "variant": "image"}},
               {"label": "static", "reproduce": {"method": "bestie", "variant": "abl-pam-iag"}}],
}


def _curve(root: Path, variant: str, seed: int, curve: list[list[float]]) -> None:
    path = root / "voc" / "bestie" / variant / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {}, "curves": {"pseudo.tp50": curve}, "provenance": {}}))


def test_a_figure_tabulates_each_series_per_step_with_mean_and_std_over_seeds(tmp_path):
    from bench.report.render import render_figure
    from bench.report.specs import FigureSpec

    _curve(tmp_path, "image", 0, [[50, 10], [100, 20]])
    _curve(tmp_path, "image", 1, [[50, 14], [100, 20]])
    shown = render_figure(FigureSpec.model_validate(FIGURE), _ctx(tmp_path), plot="../plots/x.png")
    assert [(s, a.mean) for s, a in shown.curves["refined"]] == [(50, 12.0), (100, 20.0)]
    assert "| 50 | 12 ± 2.8 | – |" in shown.markdown  # a count: whole means without decimals; std of (10, 14) = 2.83
    assert "| 100 | 20 ± 0.0 | – |" in shown.markdown
    assert "Pending (no curve recorded yet): `bestie/abl-pam-iag`." in shown.markdown
    assert shown.series_reproduced == 1 and "![BESTIE Figure 6](../plots/x.png)" in shown.markdown


def test_counts_print_without_decimals_when_whole_other_metrics_keep_them():
    from bench.report.render import _fmt

    assert _fmt(2.0, 1, "pseudo.tp50") == "2" and _fmt(5782.0, 1, "pseudo.n_iou50") == "5782"
    assert _fmt(12.5, 1, "pseudo.tp50") == "12.5"  # a mean over seeds need not be whole
    assert _fmt(100.0, 1, "voc.mAP50") == "100.0" and _fmt(float("nan"), 1, "pseudo.n_iou50") == "–"


def test_the_index_lists_figures_with_their_reproduced_series(tmp_path):
    from bench.report.render import render_figure
    from bench.report.specs import FigureSpec

    _curve(tmp_path, "image", 0, [[50, 10]])
    shown = render_figure(FigureSpec.model_validate(FIGURE), _ctx(tmp_path), plot="p.png")
    index = render_index([], _ctx(tmp_path), "", [shown])
    assert "| BESTIE | [6](bestie/figure6.md) | TPs over training. | 2 | 1 |" in index


def test_a_figure_may_only_plot_a_metric_recorded_over_training():
    from bench.report.specs import FigureSpec

    with pytest.raises(ValueError, match="metric"):
        FigureSpec.model_validate({**FIGURE, "metric": "voc.mAP50"})


def _seeds(root: Path, variant: str, values: list[float]) -> None:
    for seed, value in enumerate(values):
        _metrics(root, variant, seed, value)


def test_a_difference_inside_two_standard_errors_is_within_noise(tmp_path):
    # a: 60, 62 (mean 61, s 1.414); b: 58, 62 (mean 60, s 2.828): SE = sqrt(2/2 + 8/2) = 2.236, |Δ| = 1 ≤ 4.47
    _seeds(tmp_path, "a", [60.0, 62.0])
    _seeds(tmp_path, "b", [58.0, 62.0])
    outcome = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path))
    assert [ours for _, _, ours in outcome.claims] == ["within noise"]
    assert "| a beats b | held | within noise · Δ +1.0, SE 2.2 (n ≥ 2) |" in outcome.markdown


def test_a_difference_beyond_two_standard_errors_decides_the_claim(tmp_path):
    # a: 60, 62; b: 50, 52: Δ = 10, SE = sqrt(2/2 + 2/2) = 1.414, 10 > 2.83 → held
    _seeds(tmp_path, "a", [60.0, 62.0])
    _seeds(tmp_path, "b", [50.0, 52.0])
    outcome = render_table(TableSpec.model_validate(SPEC), _ctx(tmp_path))
    assert "| a beats b | held | held · Δ +10.0, SE 1.4 (n ≥ 2) |" in outcome.markdown


def test_a_verdict_with_one_seed_on_a_side_says_single_seed():
    from bench.report.metrics import Aggregate
    from bench.report.verdicts import judge_seeds

    claim = Claim(text="x", left="a", op=">", right="b", metric="voc.mAP50")
    verdict = judge_seeds(claim, Aggregate(61.0, 1.4, 2), Aggregate(60.0, None, 1))
    assert (verdict.word, verdict.single_seed, verdict.text(1)) == ("held", True, "held (single seed) · Δ +1.0")
    near = Claim(text="x", left="a", op="~", right="b", metric="voc.mAP50", tolerance=0.5)
    # |Δ| = 2 > tolerance 0.5 but ≤ 2·SE = 2·sqrt(2/2 + 2/2) = 2.83: a "~" claim holds
    assert judge_seeds(near, Aggregate(62.0, 1.414, 2), Aggregate(60.0, 1.414, 2)).word == "held"


def test_a_claim_on_a_reported_only_row_is_not_testable_here(tmp_path):
    spec = {**SPEC, "claims": [{"text": "a beats the other method", "left": "a", "op": ">", "right": "c",
                                "metric": "voc.mAP50"}]}
    _metrics(tmp_path, "a", 0, 60.0)
    outcome = render_table(TableSpec.model_validate(spec), _ctx(tmp_path))
    assert [ours for _, _, ours in outcome.claims] == ["not testable here"]
    assert "| a beats the other method | held | not testable here |" in outcome.markdown


BASELINE_SPEC = {
    "paper": "bestie", "table": "1", "caption": "Points.", "paper_dataset": "VOC val", "reproduced_on": "synth-voc",
    "columns": [{"key": "voc.mAP50", "label": "mAP50"}, {"key": "voc.mAP75", "label": "mAP75"}],
    "rows": [{"id": "gt", "label": "Mask R-CNN (full)", "reproduce": {"method": "segmentor", "variant": "mrcnn-gt"}},
             {"id": "pts", "label": "BESTIE (point)", "reproduce": {"method": "bestie", "variant": "points"}},
             {"id": "base", "label": "one-point baseline",
              "reproduce": {"method": "bestie", "variant": "transfer-only"}}],
}


def _roles() -> dict:
    from bench.report.roles import BASELINE, UPPER_BOUND, WEAK, RunRole

    return {("segmentor", "mrcnn-gt"): RunRole(UPPER_BOUND), ("bestie", "points"): RunRole(WEAK),
            ("bestie", "transfer-only"): RunRole(BASELINE)}


def test_sanity_flags_name_rows_and_numbers(tmp_path):
    _write(tmp_path, "segmentor", "mrcnn-gt", {"voc.mAP50": 17.6, "voc.mAP75": 2.5})
    _write(tmp_path, "bestie", "points", {"voc.mAP50": 20.2, "voc.mAP75": 0.4})
    _write(tmp_path, "bestie", "transfer-only", {"voc.mAP50": 23.6, "voc.mAP75": 0.3})
    outcome = render_table(TableSpec.model_validate(BASELINE_SPEC), replace(_ctx(tmp_path), roles=_roles()))
    assert outcome.flags == [
        "**near zero**: BESTIE (point) — mAP75 0.4 (≤ 1)",
        "**near zero**: one-point baseline — mAP75 0.3 (≤ 1)",
        "**below its training-free baseline**: BESTIE (point) < one-point baseline — mAP50 20.2 < 23.6",
        "**upper bound below a weak row**: Mask R-CNN (full) < BESTIE (point) — mAP50 17.6 < 20.2",
    ]
    assert "## Sanity flags\n\n- **near zero**: BESTIE (point)" in outcome.markdown
    index = render_index([outcome], _ctx(tmp_path), "", leaderboard="leaderboard.md", leaderboard_flags=["x < y"])
    assert "- [BESTIE Table 1](bestie/table1.md): **upper bound below a weak row**: Mask R-CNN (full)" in index
    assert "- [Leaderboard](leaderboard.md): x < y\n" in index and "**[Leaderboard](leaderboard.md)**" in index


def test_a_weak_segmentor_row_is_compared_with_a_baseline_of_its_kind_only():
    from bench.report.flags import ScoredRow, row_flags
    from bench.report.metrics import Aggregate

    def row(label: str, role: str, kind: str, value: float) -> ScoredRow:
        return ScoredRow(label, role, kind, "voc", {"voc.mAP50": Aggregate(value, None, 1)})

    rows = [row("baseline", "baseline", "direct", 30.0), row("method†", "weak", "segmentor", 20.0),
            row("method", "weak", "direct", 25.0)]
    assert row_flags(rows, {"voc.mAP50": "mAP50"}, 1) == [
        "**below its training-free baseline**: method < baseline — mAP50 25.0 < 30.0"]


def test_a_curve_that_falls_to_zero_after_its_peak_is_flagged():
    from bench.report.flags import curve_flags
    from bench.report.metrics import Aggregate

    def curve(values: list[float]) -> list:
        return [(50 * i, Aggregate(v, None, 1)) for i, v in enumerate(values)]

    flags = curve_flags({"image": curve([300, 412, 0, 0, 0]), "points": curve([308, 564, 553]),
                         "dip": curve([100, 0, 80])}, "pseudo.tp50", 1)
    assert flags == ["**curve collapses**: image — 412 at step 50, then 0 at step 100, 0 at step 150, 0 at step 200"]


def test_the_roles_come_from_the_registrys_descriptions_and_segmentor_rows_take_their_sources():
    from bench.methods import Producer, StageGroup, segmentor_group
    from bench.report.roles import run_roles

    method = Producer(name="m", title="M", sections=(), code=(), paper="m",
                      variants={"net": "T1 row", "rule": "training-free baseline: a rule"},
                      groups=(StageGroup("g", "voc", ("net", "rule")),
                              segmentor_group("s", "m", "voc", ("net", "rule"))))
    gt = Producer(name="seg", title="S", sections=(), code=(),
                  variants={"gt": "trained on the ground truth: the fully supervised upper bound"})
    roles = run_roles([method, gt], [(method, g) for g in method.groups],
                      {"m": {"net", "rule", "net-mrcnn", "rule-mrcnn"}, "seg": {"gt"}})
    assert {k: (r.role, r.kind) for k, r in roles.items()} == {
        ("m", "net"): ("weak", "direct"), ("m", "rule"): ("baseline", "direct"),
        ("m", "net-mrcnn"): ("weak", "segmentor"), ("m", "rule-mrcnn"): ("baseline", "segmentor"),
        ("seg", "gt"): ("upper bound", "direct")}


def test_a_sweep_csv_leaves_the_std_of_a_single_seed_empty(tmp_path):
    from bench.report.render import sweep_csv

    _metrics(tmp_path, "a", 0, 60.0)
    _seeds(tmp_path, "b", [48.0, 50.0])
    lines = sweep_csv(sweep_rows(TableSpec.model_validate(SPEC), _ctx(tmp_path))).splitlines()
    assert lines == ["row,x,reported,reproduced,reproduced_std,n,this_experiment", "a,0.1,52.0,60.0,,1,False",
                     "b,0.2,50.8,49.0,1.4142135623730951,2,False"]


def test_reference_rows_print_counts_as_integers(tmp_path):
    path = tmp_path / "voc" / "reference" / "ground-truth" / "seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"metrics": {"pseudo.n_iou50": 968.0, "voc.mAP50": 100.0}}))
    text, _ = reference_section({"voc": "synth-voc"}, tmp_path)
    assert "| pseudo.n_iou50 | 968 | – |" in text and "| voc.mAP50 | 100.00 | – |" in text


def test_plots_are_written_for_sweeps_and_figures_with_every_series(tmp_path):
    from bench.report.render import plot_figure, plot_sweep, render_figure
    from bench.report.specs import FigureSpec

    _seeds(tmp_path, "a", [60.0, 62.0])
    spec = TableSpec.model_validate(SPEC)
    plot_sweep(spec, sweep_rows(spec, _ctx(tmp_path)), tmp_path / "sweep.png", "P2Seg")
    _curve(tmp_path, "image", 0, [[0, 10], [50, 20]])
    _curve(tmp_path, "abl-pam-iag", 0, [[0, 10], [50, 20]])  # the same numbers: drawn side by side, both visible
    shown = render_figure(FigureSpec.model_validate(FIGURE), _ctx(tmp_path), plot="x.png")
    plot_figure(shown, tmp_path / "figure.png", "BESTIE")
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "figure.png").stat().st_size > 0
