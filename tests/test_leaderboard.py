"""The leaderboard: rows from the registry's roles and the metrics folder, cells mean ± std with n, reference
lines, training time, commit and profile, sanity flags, the plot."""

import json
from pathlib import Path

from bench.report.leaderboard import entries, plot_leaderboard, render_leaderboard
from bench.report.roles import BASELINE, OTHER, SELF_CHECK, UPPER_BOUND, WEAK, RunRole

ROLES = {("bestie", "points"): RunRole(WEAK), ("p2seg", "hrnet"): RunRole(WEAK),
         ("p2seg", "resnet"): RunRole(WEAK),  # registered, never run: no row
         ("bestie", "transfer-only"): RunRole(BASELINE), ("segmentor", "mrcnn-gt"): RunRole(UPPER_BOUND),
         ("reference", "ground-truth"): RunRole(SELF_CHECK), ("wsss", "pam"): RunRole(OTHER)}
SLOTS = {"voc": "synth-voc", "coco": "synth-coco"}


def _metrics(root: Path, slot: str, method: str, variant: str, seed: int, metrics: dict, commit: str = "abcdef0123456"
             ) -> None:
    path = root / slot / method / variant / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "provenance": {
        "git_commit": commit, "profile": "embedded", "python": "3.11.7",
        "run": {"wsss_run": "runs/voc/wsss/points-partial/seed0", "points_mode": "center"}}}))


def _timing(root: Path, slot: str, method: str, variant: str, seed: int, timing: dict) -> None:
    path = root / slot / method / variant / f"seed{seed}" / "timing.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timing))


def _board(tmp_path: Path) -> tuple[list, str]:
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    _metrics(metrics, "voc", "bestie", "points", 0, {"voc.mAP50": 20.0, "voc.mAP25": 40.0})
    _metrics(metrics, "voc", "bestie", "points", 1, {"voc.mAP50": 22.0, "voc.mAP25": 42.0})
    _metrics(metrics, "voc", "p2seg", "hrnet", 0, {"voc.mAP50": 30.0, "voc.mAP25": 45.0})
    _metrics(metrics, "coco", "p2seg", "hrnet", 0, {"coco.segm.AP": 7.0, "pq.PQ": 12.0})
    _metrics(metrics, "voc", "bestie", "transfer-only", 0, {"voc.mAP50": 23.6, "voc.mAP25": 36.0})
    _metrics(metrics, "voc", "segmentor", "mrcnn-gt", 0, {"voc.mAP50": 17.6, "voc.mAP25": 50.0})
    _metrics(metrics, "voc", "reference", "ground-truth", 0, {"voc.mAP50": 100.0})
    _metrics(metrics, "voc", "wsss", "pam", 0, {"semantic.mIoU": 50.0})
    _timing(runs, "voc", "bestie", "points", 0, {"round0": {"train_seconds": 90.0}, "stage_seconds": 99.0})
    _timing(runs, "voc", "bestie", "points", 1, {"round0": {"train_seconds": 100.0}, "stage_seconds": 109.0})
    _timing(runs, "voc", "bestie", "transfer-only", 0, {"stage_seconds": 0.49})
    found = entries(ROLES, {("bestie", "points"): "point rows"}, metrics, ["voc", "coco"])
    board = render_leaderboard(found, profile="embedded", seeds=[0, 1], slot_datasets=SLOTS, runs_root=runs,
                               decimals=1, plot="plots/leaderboard.png", titles={"bestie": "BESTIE", "p2seg": "P2Seg"})
    return found, board.markdown


def test_rows_are_the_registered_runs_with_metrics_and_reference_lines_apart(tmp_path):
    found, md = _board(tmp_path)
    assert sorted(e.name for e in found) == ["bestie/points", "bestie/transfer-only", "p2seg/hrnet",
                                             "segmentor/mrcnn-gt"]
    weak = md.split("## Weakly supervised methods")[1].split("## Reference lines")[0]
    reference = md.split("## Reference lines")[1].split("## Sanity flags")[0]
    # ranked by voc mAP50, best first: p2seg/hrnet (30) above bestie/points (21)
    assert weak.index("`p2seg/hrnet`") < weak.index("`bestie/points`")
    assert "transfer-only" not in weak and "mrcnn-gt" not in weak and "ground-truth" not in md
    assert "| training-free baseline | `bestie/transfer-only` |" in reference
    assert "| upper bound | `segmentor/mrcnn-gt` |" in reference


def test_cells_are_mean_std_and_n_with_time_commit_and_profile(tmp_path):
    _, md = _board(tmp_path)
    # bestie/points: mAP25 40, 42 → 41.0 ± 1.4 (n=2); mAP50 20, 22 → 21.0 ± 1.4; train 90, 100 s → 95 ± 7
    assert ("| BESTIE | `bestie/points` — point rows | 41.0 ± 1.4 (n=2) | 21.0 ± 1.4 (n=2) | – | – | "
            "voc 95 ± 7 | voc: maps wsss/points-partial, center points | `abcdef0123` | `embedded` |") in md
    assert "| 45.0 (n=1) | 30.0 (n=1) | 7.0 (n=1) | 12.0 (n=1) |" in md  # no coco AP50 column: no run has it
    assert "| voc 0.5 |" in md  # the baseline's stage time (it does not train)
    assert "No run records voc mAP70, voc mAP75, coco AP50 yet." in md
    assert ("| Method | Run | voc mAP25 | voc mAP50 | coco AP | coco PQ | Train s | Inputs | Scored at commit | "
            "Profile |") in md


def test_the_leaderboard_flags_and_states_what_the_runs_did_not_record(tmp_path):
    _, md = _board(tmp_path)
    assert "- **below its training-free baseline**: `bestie/points` < `bestie/transfer-only` — voc mAP50 21.0 < " \
           "23.6" in md
    assert "- **upper bound below a weak row**: `segmentor/mrcnn-gt` < `p2seg/hrnet` — voc mAP50 17.6 < 30.0" in md
    assert "Not recorded by the runs (run.json / the metrics' provenance): dirty tree, torch, timm, numpy, device" in md


def test_the_plot_is_written_with_and_without_runs(tmp_path):
    found, _ = _board(tmp_path)
    plot_leaderboard(found, SLOTS, tmp_path / "board.png", "Leaderboard")
    plot_leaderboard([], SLOTS, tmp_path / "empty.png", "Leaderboard")
    assert (tmp_path / "board.png").stat().st_size > 0 and (tmp_path / "empty.png").stat().st_size > 0
