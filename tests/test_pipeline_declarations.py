"""dvc.yaml is what the registered methods generate, and declares for every stage exactly the params sections
its code reads."""

from pathlib import Path

import yaml

from bench.commands import load_commands
from bench.stages.base import STAGES

REPO = Path(__file__).resolve().parents[1]
#: ``bench <command>`` → the stage kind it declares (bench.stages.base.declare_stage), where they differ.
STAGE_OF_COMMAND = {"data": "prepare"}


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _roots(params: list) -> set[str]:
    return {str(p).split(".")[0] for p in params}


def _kind(stage: dict) -> str:
    command = stage["cmd"].split()[1]
    return STAGE_OF_COMMAND.get(command, command)


def test_dvc_yaml_is_what_the_registry_generates():
    from bench.pipeline import render

    load_commands()
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == render(), \
        "dvc.yaml is stale: run `bench pipeline write` (it is generated from the registered stage groups)"


def test_every_dvc_stage_runs_a_registered_stage_kind():
    load_commands()
    assert {_kind(stage) for stage in _dvc_stages().values()} <= set(STAGES)


def test_declared_params_match_the_sections_the_stage_reads():
    load_commands()
    for name, stage in _dvc_stages().items():
        declared = _roots(stage.get("params", []))
        reads = {s.split(".")[0] for s in STAGES.get(_kind(stage)).sections}
        assert declared == reads, f"dvc.yaml stage {name!r}: declares {sorted(declared)}, code reads {sorted(reads)}"


def test_every_trained_bestie_or_p2seg_stage_depends_on_its_slots_pretrained_backbones():
    """backbone_init: pretrain reads runs/<slot>/pretrain: re-training the backbones re-runs the methods."""
    no_network = {"bestie-baseline", "p2seg-transfer", "bestie-infer"}  # rules on WSSS maps; kept weights
    for name, stage in _dvc_stages().items():
        if _kind(stage) not in ("bestie", "p2seg") or name in no_network:
            continue
        slot = "coco" if "--dataset coco" in stage["cmd"] else "voc"
        assert f"runs/{slot}/pretrain" in stage["deps"], name


def test_an_inference_row_depends_on_the_weights_it_reads():
    assert "runs/voc/bestie/points/seed${item.seed}/model.pt" in _dvc_stages()["bestie-infer"]["deps"]


def test_tracking_is_never_a_dependency():
    for name, stage in _dvc_stages().items():
        assert "tracking" not in _roots(stage.get("params", [])), name


def test_the_hard_pixel_ratio_sweep_declares_every_mdm_key_but_the_ratio():
    """The sweep fixes the ratio per row, so it must not re-run on ``-S mdm.hard_pixel_ratio``, but
    must on every other mdm value (a new mdm field is in its list without anyone adding it)."""
    from bench.config.schema import MdmParams

    declared = {str(p) for p in _dvc_stages()["p2seg-sweep"]["params"] if str(p).startswith("mdm.")}
    assert declared == {f"mdm.{k}" for k in MdmParams.model_fields if k != "hard_pixel_ratio"}


def test_the_sweep_does_not_train_the_default_runs_ratio_twice():
    """hpr-0.2 is p2seg/hrnet under the default mdm.hard_pixel_ratio: no stage group trains it."""
    from bench.methods import GROUPS, rows_of

    load_commands()
    _, sweep = GROUPS.get("p2seg-sweep")
    assert "hpr-0.2" not in sweep.variants and "hpr-0.2" in rows_of("p2seg")


def test_every_table_row_names_an_experiment_some_stage_produces():
    from bench.methods import PRODUCERS, rows_of
    from bench.paths import SPECS
    from bench.report.specs import experiment_errors, load_figures, load_specs

    load_commands()
    produced = {name: rows_of(name) for name, _ in PRODUCERS.items()}
    assert experiment_errors(load_specs(REPO / SPECS), load_figures(REPO / SPECS), produced) == []
