"""dvc.yaml declares, for every stage, exactly the params sections its code reads."""

import importlib
from pathlib import Path

import yaml

from bench.commands import COMMAND_MODULES
from bench.stages.base import STAGES

REPO = Path(__file__).resolve().parents[1]
#: dvc.yaml stage → the stage kind its command runs.
STAGE_KIND = {"prepare": "prepare", "points": "points", "wsss": "wsss", "reference": "reference", "pretrain": "pretrain",
              "evaluate-wsss": "evaluate",
              "wsss-table4": "wsss", "evaluate-wsss-table4": "evaluate",
              "wsss-image": "wsss", "evaluate-wsss-image": "evaluate", "wsss-pam-ablation": "wsss",
              "wsss-oracle": "wsss",
              "segment-gt": "segment", "evaluate-segment-gt": "evaluate",
              "bestie-points": "bestie", "bestie-image": "bestie", "bestie-baseline": "bestie",
              "bestie-ablation": "bestie", "bestie-peaks": "bestie", "bestie-wsss-gt": "bestie",
              "evaluate-bestie-ablation": "evaluate", "evaluate-bestie-peaks": "evaluate",
              "evaluate-bestie-wsss-gt": "evaluate",
              "evaluate-bestie-points": "evaluate", "evaluate-bestie-image": "evaluate",
              "evaluate-bestie-baseline": "evaluate", "evaluate-reference": "evaluate",
              "p2seg": "p2seg", "p2seg-ablation": "p2seg", "p2seg-sweep": "p2seg", "p2seg-transfer": "p2seg",
              "evaluate-p2seg": "evaluate", "evaluate-p2seg-variants": "evaluate",
              "evaluate-p2seg-sweep": "evaluate", "evaluate-p2seg-transfer": "evaluate",
              "segment-bestie": "segment", "segment-p2seg": "segment", "segment-bestie-solov2": "segment",
              "segment-p2seg-solov2": "segment", "segment-bestie-baseline": "segment",
              "evaluate-segment-bestie-baseline": "evaluate",
              "point-filter-bestie": "point-filter", "evaluate-point-filter-bestie": "evaluate",
              "evaluate-segment-bestie": "evaluate", "evaluate-segment-p2seg": "evaluate", "evaluate-segment-p2seg-solov2": "evaluate",
              "wsss-coco": "wsss", "evaluate-wsss-coco": "evaluate", "bestie-coco-points": "bestie",
              "bestie-coco-image": "bestie", "p2seg-coco": "p2seg", "segment-bestie-coco": "segment",
              "segment-p2seg-coco": "segment", "evaluate-bestie-coco": "evaluate", "evaluate-p2seg-coco": "evaluate",
              "report": "report"}


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _roots(params: list) -> set[str]:
    return {str(p).split(".")[0] for p in params}


def test_every_dvc_stage_runs_a_registered_stage_kind():
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    assert set(_dvc_stages()) == set(STAGE_KIND)
    assert set(STAGE_KIND.values()) <= set(STAGES)


def test_declared_params_match_the_sections_the_stage_reads():
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        declared = _roots(body.get("params", []))
        reads = {s.split(".")[0] for s in STAGES.get(STAGE_KIND[name]).sections}
        assert declared == reads, f"dvc.yaml stage {name!r}: declares {sorted(declared)}, code reads {sorted(reads)}"


def test_every_trained_bestie_or_p2seg_stage_depends_on_its_slots_pretrained_backbones():
    """backbone_init: pretrain reads runs/<slot>/pretrain: re-training the backbones re-runs the methods."""
    training_free = {"bestie-baseline", "p2seg-transfer"}  # rules on WSSS maps: no network
    for name, stage in _dvc_stages().items():
        if STAGE_KIND[name] not in ("bestie", "p2seg") or name in training_free:
            continue
        body = stage.get("do", stage)
        slot = "coco" if "--dataset coco" in body["cmd"] else "voc"
        assert f"runs/{slot}/pretrain" in body["deps"], name


def test_tracking_is_never_a_dependency():
    for name, stage in _dvc_stages().items():
        assert "tracking" not in _roots(stage.get("do", stage).get("params", [])), name


def test_the_hard_pixel_ratio_sweep_declares_every_mdm_key_but_the_ratio():
    """The sweep fixes the ratio per row, so it must not re-run on ``-S mdm.hard_pixel_ratio``, but
    must on every other mdm value: a new mdm field has to be added to its list."""
    from bench.config.schema import MdmParams

    declared = {str(p) for p in _dvc_stages()["p2seg-sweep"]["params"] if str(p).startswith("mdm.")}
    assert declared == {f"mdm.{k}" for k in MdmParams.model_fields if k != "hard_pixel_ratio"}
