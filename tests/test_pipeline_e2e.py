"""The whole pipeline on the smoke profile: `dvc repro` end to end, what `-S key=value` re-runs,
the evaluation self-check and the reports (determinism: tests/test_pipeline_determinism.py)."""

import json
import re
from pathlib import Path

import pytest

from bench.config.loader import render_profile
from smoke_repo import init_repo, repro_on_two_cores, run, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    init_repo(repo)
    repro_on_two_cores(repo, timeout=3600)  # every stage group of the registry, one to three variants each
    return repo


def _dry_run_stages(repo: Path) -> set[str]:
    out = run(["dvc", "repro", "--dry"], repo).stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_repro_renders_every_table_and_the_index(pipeline):
    index = (pipeline / "reports" / "index.md").read_text()
    assert "29 tables" in index
    for paper, n in {"p2seg": 6, "point2mask": 7, "bestie": 8, "jtsm": 8}.items():
        assert sorted(p.name for p in (pipeline / "reports" / paper).glob("table*.md")) == sorted(
            f"table{i}.md" for i in range(1, n + 1))
    assert (pipeline / "reports" / "plots" / "p2seg_table5.png").stat().st_size > 1000


def test_bestie_figure_6_shows_a_true_positive_curve_per_series(pipeline):
    """Every BESTIE training run exports its refinement's labels at checkpoints, from step 0 (the
    transfer) to the last step; the report plots their TPs per step."""
    assert "| BESTIE | [6](bestie/figure6.md) |" in (pipeline / "reports" / "index.md").read_text()
    assert "Pending" not in (pipeline / "reports" / "bestie" / "figure6.md").read_text()
    assert (pipeline / "reports" / "plots" / "bestie_figure6.png").stat().st_size > 1000
    data = json.loads((pipeline / "metrics" / "voc" / "bestie" / "points" / "seed0.json").read_text())
    final_step = data["provenance"]["run"]["config"]["iterations"]
    steps = [step for step, _ in data["curves"]["pseudo.tp50"]]
    assert steps[0] == 0 and steps[-1] == final_step and steps == sorted(steps)
    assert not (pipeline / "runs" / "voc" / "bestie" / "points" / "seed0.partial").exists()


def test_a_training_stage_keeps_its_network_and_config_loadable_with_weights_only(pipeline):
    import torch

    kept = torch.load(pipeline / "runs/voc/bestie/points/seed0/model.pt", weights_only=True)
    assert kept["config"]["supervision"] == "points" and kept["model"]
    assert torch.load(pipeline / "runs/voc/p2seg/hrnet/seed0/model.pt", weights_only=True)["model"]


def test_the_val_clean_row_is_the_points_network_inferred_with_the_val_points(pipeline):
    """bestie/points-val-clean trains nothing: it reads bestie/points' kept network, and only its val inference
    differs (release --val_clean: grouped to the val points)."""
    runs = pipeline / "runs" / "voc" / "bestie"
    assert not (runs / "points-val-clean/seed0/train_pseudo.json").exists()
    info = json.loads((runs / "points-val-clean/seed0/run.json").read_text())
    assert info["config"]["val_clean"] is True and info["source"] == "runs/voc/bestie/points/seed0"
    clean = json.loads((runs / "points-val-clean/seed0/val_instances.json").read_text())
    assert clean != json.loads((runs / "points/seed0/val_instances.json").read_text())
    labels = {r["image_id"]: set(r["category_ids"]) for r in json.loads(
        (pipeline / "data/canonical/voc/val/image_labels.json").read_text())["images"]}
    assert clean and all(r["category_id"] in labels[r["image_id"]] for r in clean)  # cleaned by the image labels
    assert "voc.mAP50" in json.loads(
        (pipeline / "metrics/voc/bestie/points-val-clean/seed0.json").read_text())["metrics"]


def test_the_class_score_row_rescores_the_points_networks_val_masks(pipeline):
    """bestie/points-class-score infers with bestie/points' kept network the same val masks; each is scored
    by its mean class probability, never below the release's centre × class score of the same mask."""
    runs = pipeline / "runs" / "voc" / "bestie"
    assert json.loads((runs / "points-class-score/seed0/run.json").read_text())["config"]["score"] == "class"
    rescored = json.loads((runs / "points-class-score/seed0/val_instances.json").read_text())
    release = json.loads((runs / "points/seed0/val_instances.json").read_text())
    assert rescored and [(r["image_id"], r["category_id"], r["segmentation"]) for r in rescored] == \
        [(r["image_id"], r["category_id"], r["segmentation"]) for r in release]
    assert all(a["score"] >= b["score"] for a, b in zip(rescored, release))


def test_the_one_point_row_keeps_the_points_rows_masks_that_hold_one_val_point(pipeline):
    """bestie/points-one-point is bestie/points' val records, unchanged and in order, each holding exactly
    one val point of its class (the training-free baseline's rule), recounted here from the points file."""
    from pycocotools import mask as mask_utils

    runs = pipeline / "runs" / "voc" / "bestie"
    release = json.loads((runs / "points/seed0/val_instances.json").read_text())
    kept = json.loads((runs / "points-one-point/seed0/val_instances.json").read_text())
    info = json.loads((runs / "points-one-point/seed0/run.json").read_text())
    assert info["points_file"] == "data/points/voc/val_center.json"
    points = json.loads((pipeline / info["points_file"]).read_text())["points"]

    def held(record: dict) -> int:
        mask = mask_utils.decode(record["segmentation"])
        return sum(bool(mask[p["y"], p["x"]]) for p in points
                   if p["image_id"] == record["image_id"] and p["category_id"] == record["category_id"])

    assert release and kept == [r for r in release if held(r) == 1]
    assert info["val_instances_kept"] == len(kept) and sum(info["val_instances_held_points"].values()) == len(release)
    assert "voc.mAP50" in json.loads(
        (pipeline / "metrics/voc/bestie/points-one-point/seed0.json").read_text())["metrics"]


def test_ground_truth_row_reads_100_on_every_metric(pipeline):
    assert "**Self-check: PASS**" in (pipeline / "reports" / "index.md").read_text()
    for slot in ("voc", "coco"):
        data = json.loads((pipeline / "metrics" / slot / "reference" / "ground-truth" / "seed0.json").read_text())
        percent = {k: v for k, v in data["metrics"].items() if not k.startswith("pseudo.n_") and k != "pseudo.tp50"}
        # pycocotools averages in float64: 100 can come out as 99.99999999999997
        assert {k: v for k, v in percent.items() if v is not None and abs(v - 100.0) > 1e-9} == {}
        assert data["metrics"]["pq.PQ_st"] == 100.0 and data["metrics"]["voc.mAP75"] == 100.0


def test_oracle_grouping_is_below_the_ground_truth_on_touching_instances(pipeline):
    data = json.loads((pipeline / "metrics" / "coco" / "reference" / "oracle-grouping" / "seed0.json").read_text())
    assert 0 < data["metrics"]["pseudo.mean_iou"] < 100


def test_nothing_reruns_when_nothing_changed(pipeline):
    assert _dry_run_stages(pipeline) == set()


def test_evaluation_skips_the_runs_whose_predictions_did_not_change(pipeline):
    """A forced re-run of the slot's evaluation re-scores nothing: every run's fingerprint is unchanged."""
    before = {p: p.read_bytes() for p in (pipeline / "metrics" / "voc").rglob("*.json")}
    out = run(["dvc", "repro", "--force", "--single-item", "evaluate-voc"], pipeline)
    assert "0 runs scored" in out.stdout + out.stderr
    assert {p: p.read_bytes() for p in (pipeline / "metrics" / "voc").rglob("*.json")} == before


def test_hard_pixel_ratio_reruns_only_the_p2seg_runs_that_read_it(pipeline):
    """`repro --dry` lists the stages whose own params changed (their evaluations, the P2Seg
    segmentor rows and the report follow from the new outputs): the default runs of both slots, the
    ablations and the ResNet row, never the fixed-ratio sweep or the S2I rule alone."""
    write_params(pipeline, **{"mdm.hard_pixel_ratio": 0.4})
    try:
        stages = _dry_run_stages(pipeline)
    finally:
        write_params(pipeline)
    ablations = render_profile("smoke")["report"]["variants"]["p2seg-ablation"]
    assert stages == {"p2seg@hrnet-0", "p2seg-coco@hrnet-0", "report", *(f"p2seg-ablation@{v}-0" for v in ablations)}


def test_a_voc_data_param_leaves_the_coco_chain_alone(pipeline):
    write_params(pipeline, **{"data.voc.synthetic.seed": 5})
    try:
        stages = _dry_run_stages(pipeline)
    finally:
        write_params(pipeline)
    assert "prepare-voc" in stages and "report" in stages
    assert not [s for s in stages if re.search(r"-coco(@|-|$)", s)]  # point2mask-voc-cocopre is a voc stage
