"""The method contract: one registration per method; a new method joins through methods/<m>/, one command
module, its params section and profile values and its specs — and nothing else."""

import json
import textwrap
from pathlib import Path

import pytest

from bench.commands import load_commands
from bench.methods import PRODUCERS, Producer, StageGroup, register
from bench.registry import Registry
from smoke_repo import init_repo, run


def test_a_registry_refuses_a_second_entry_of_the_same_name():
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(KeyError, match="thing 'a' is already registered"):
        registry.add("a", 2)


def test_a_registration_after_the_commands_are_loaded_is_refused():
    load_commands()
    with pytest.raises(RuntimeError, match="registered after the method registry was frozen"):
        register(Producer(name="late", title="Late", sections=(), code=(), variants={}), "tests.late")
    assert "late" not in PRODUCERS


def test_a_stage_group_on_an_unknown_slot_is_refused():
    registry_before = dict(PRODUCERS.items())
    with pytest.raises((ValueError, RuntimeError)):
        register(Producer(name="odd", title="Odd", sections=(), code=(), variants={},
                          groups=(StageGroup("odd", "cityscapes", ("x",)),)), "tests.odd")
    assert dict(PRODUCERS.items()) == registry_before


def test_no_library_module_imports_a_command_module():
    """Commands integrate; the frame, the readers, the methods and the benchmarks never import one."""
    repo = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(repo)) for folder in ("bench", "methods", "datasets")
                 for p in (repo / folder).rglob("*.py")
                 if "bench/commands" not in str(p) and "from bench.commands." in p.read_text(encoding="utf-8")]
    assert offenders == []


TOY_METHOD = '''
"""A toy point-supervised method: a square mask around each point."""

import numpy as np


def square_masks(shape: tuple[int, int], yx: np.ndarray, half: int) -> list[np.ndarray]:
    """One boolean mask per point: the square of side 2 * half + 1 centred on it, clipped to the image."""
    masks = []
    for y, x in yx:
        mask = np.zeros(shape, dtype=bool)
        mask[max(0, y - half): y + half + 1, max(0, x - half): x + half + 1] = True
        masks.append(mask)
    return masks
'''

TOY_COMMAND = '''
"""``bench toy`` — the toy method as a stage: squares around the val points."""

import argparse
from pathlib import Path

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.inputs import load_cues
from bench.io import write_json
from bench.methods import Producer, StageGroup, register
from bench.paths import points_file
from bench.stages.base import declare_stage
from bench.stages.run import method_run

PRODUCER = register(Producer(
    name="toy", title="Toy", paper="toy", sections=("toy",), code=("methods/toy",),
    variants={"squares": "a square around each val point"},
    groups=(StageGroup("toy", "voc", ("squares",), deps=("data/points/voc",)),)), __name__)
STAGE = declare_stage("toy", "data", *PRODUCER.sections)


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    parser.add_argument("--variant", required=True, choices=list(PRODUCER.variants))
    parser.add_argument("--seed", type=int, default=0)
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    from methods.toy import square_masks

    with method_run(STAGE, slot=args.dataset, method="toy", variant=args.variant, seed=args.seed,
                    params_path=Path(args.params), points_mode="center") as (ctx, run):
        cues = load_cues(points_file(args.dataset, run.val.name, "center"), run.val, run.dataset)
        classes, records = run.dataset.semantic_classes, []
        for image in run.val.images:
            found = cues[image.id]
            masks = square_masks((image.height, image.width), found.yx, ctx.params.toy.half_size)
            records += P.instance_records(image.id, masks, [classes[k] for k in found.classes], [1.0] * len(masks))
        write_json(run.out / P.INSTANCES, records, indent=None)
    return 0


COMMANDS.add("toy", Command("the toy method: a square around each val point", _configure, _handle))
'''

TOY_SECTION = '''
class ToyParams(Section):
    half_size: int = Field(default=2, ge=1, description="half the side of each square (px)")


'''

TOY_PAPER = {"name": "Toy", "title": "A Toy Method", "authors": "Nobody, 2026", "text": "toy.txt", "order": 9}
TOY_TABLE = {
    "paper": "toy", "table": "1", "caption": "Squares around points.", "paper_dataset": "none",
    "reproduced_on": "synth-voc", "columns": [{"key": "voc.mAP25", "label": "mAP25"}],
    "rows": [{"id": "squares", "label": "Squares", "reported": {"voc.mAP25": 1.0},
              "reproduce": {"method": "toy", "variant": "squares"}}],
}


def _add_toy_method(repo: Path) -> None:
    """Exactly the files a new method adds or edits."""
    (repo / "methods" / "toy").mkdir()
    (repo / "methods" / "toy" / "__init__.py").write_text(textwrap.dedent(TOY_METHOD))
    (repo / "bench" / "commands" / "toy.py").write_text(textwrap.dedent(TOY_COMMAND))
    schema = repo / "bench" / "config" / "schema.py"
    text = schema.read_text()
    text = text.replace("class Params(Section):", TOY_SECTION + "class Params(Section):")
    text = text.replace("    jtsm: JtsmParams = JtsmParams()\n",
                        "    jtsm: JtsmParams = JtsmParams()\n    toy: ToyParams = ToyParams()\n")
    schema.write_text(text)
    profile = repo / "configs" / "profiles" / "smoke.yaml"
    profile.write_text(profile.read_text() + "    toy: [squares]\n")
    specs = repo / "reports" / "specs" / "toy"
    specs.mkdir()
    (specs / "paper.yaml").write_text(json.dumps(TOY_PAPER))
    (specs / "table1.yaml").write_text(json.dumps(TOY_TABLE))


@pytest.mark.slow
def test_a_toy_method_added_through_the_contract_is_validated_run_evaluated_and_rendered(tmp_path):
    init_repo(tmp_path)
    _add_toy_method(tmp_path)
    run(["bench", "pipeline", "write"], tmp_path)
    run(["bench", "params", "use", "smoke", "--set", "tracking.enabled=false"], tmp_path)
    stages = run(["dvc", "stage", "list", "--name-only"], tmp_path).stdout.split()
    assert "toy@squares-0" in stages

    bad = run_failing(["bench", "params", "use", "smoke", "--set", "toy.half_size=0", "--out", "bad.yaml"], tmp_path)
    assert "toy.half_size" in bad and not (tmp_path / "bad.yaml").exists()

    run(["dvc", "repro", "toy@squares-0", "evaluate-voc"], tmp_path, timeout=900)
    metrics = json.loads((tmp_path / "metrics/voc/toy/squares/seed0.json").read_text())["metrics"]
    assert 0 < metrics["voc.mAP25"] <= 100
    run(["bench", "report"], tmp_path)
    table = (tmp_path / "reports/toy/table1.md").read_text()
    assert table.startswith("# Toy — Table 1") and "| reproduced |" in table


def run_failing(cmd: list[str], cwd: Path) -> str:
    import subprocess

    from smoke_repo import _env

    result = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    assert result.returncode != 0, f"{' '.join(cmd)} should fail"
    return result.stdout + result.stderr


def test_a_method_config_takes_every_field_of_its_params_section_of_the_same_name():
    """One source of truth: the configs have no defaults of their own for what the params set."""
    import dataclasses

    from bench.bestie_family import make_config
    from bench.commands.p2seg import VARIANTS, make_p2seg_config
    from bench.config.schema import BestieParams, MdmParams, Params
    from methods.bestie.train import BestieConfig
    from methods.p2seg.train import P2SegConfig

    params = Params(bestie=BestieParams(min_area=7, iterations=33, decoder_channels=24, score="class"),
                    mdm=MdmParams(embed_dim=12, beta=3.0, stages=2))
    bestie = make_config(params.bestie, "points", 0, {})
    derived = {"out_indices", "cluster", "hard_pixel_ratio", "flip_tta"}  # the section's values in another form
    for field in dataclasses.fields(BestieConfig):
        if field.name in BestieParams.model_fields and field.name not in derived:
            assert getattr(bestie, field.name) == getattr(params.bestie, field.name), field.name
    assert (bestie.min_area, bestie.iterations, bestie.decoder_channels) == (7, 33, 24)
    p2seg = make_p2seg_config(params, VARIANTS.get("hrnet"), 0)
    for field in dataclasses.fields(P2SegConfig):
        if field.name in MdmParams.model_fields and field.name != "affinity_normalize":
            assert getattr(p2seg, field.name) == getattr(params.mdm, field.name), field.name
    required = [f.name for f in dataclasses.fields(BestieConfig) if f.default is dataclasses.MISSING]
    assert "min_area" in required and "iterations" in required  # no second set of defaults


def test_an_inference_row_rebuilds_the_kept_network_and_refuses_another_architecture(tmp_path):
    import dataclasses

    import torch

    from bench.bestie_family import kept_network
    from bench.stages.run import save_weights
    from method_configs import bestie_config
    from methods.bestie.train import build_model

    config = bestie_config(decoder_channels=8, head_channels=8)
    trained = build_model(3, 2, config)
    save_weights(tmp_path / "model.pt", trained, config.to_dict())
    rebuilt = kept_network(tmp_path, 3, 2, dataclasses.replace(config, val_clean=True, score="class"))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), rebuilt.state_dict().values()))
    with pytest.raises(ValueError, match="was trained with network"):
        kept_network(tmp_path, 3, 2, dataclasses.replace(config, head_channels=16))
