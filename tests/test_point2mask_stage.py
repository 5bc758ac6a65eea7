"""The Point2Mask stage's registration (bench/commands/point2mask.py) and params section: hand checks."""

import pytest

from bench.commands import load_commands
from bench.config.schema import Point2MaskParams


@pytest.fixture(scope="module")
def command():
    load_commands()
    from bench.commands import point2mask

    return point2mask


def test_rows_of_the_specs_are_the_stage_rows(command):
    from bench.methods import rows_of

    rows = rows_of("point2mask")
    for name in ("r50", "r101", "swinl", "r50-cocopre", "r101-cocopre", "swinl-cocopre", "maps-ps", "maps-ps-blow",
                 "maps-ps-bhigh", "sem-partial", "sem-partial-lab", "sem-partial-rgb", "units-equal",
                 "units-nearest-gt", "centroid-iters-2", "centroid-iters-4", "centroid-iters-8", "centroid-iters-10",
                 "min-cost", "full"):
        assert name in rows


def test_cocopre_rows_declare_the_coco_weights(command):
    from bench.methods import GROUPS, resolve

    _, group = GROUPS.get("point2mask-voc-cocopre")
    item = {"variant": "r101", "seed": "0"}
    assert resolve(group.row, item) == "r101-cocopre"
    assert "runs/coco/point2mask/r101/seed0/model.pt" in [resolve(d, item) for d in group.deps]
    assert "--variant r101-cocopre" in resolve(group.args, item)


def test_variant_options_reach_the_configs(command):
    p = Point2MaskParams()
    p2m, train = command.make_configs(p, command.VARIANTS.get("maps-ps-blow"))
    assert (p2m.use_high_boundary, p2m.use_low_boundary) == (False, True)
    p2m, _ = command.make_configs(p, command.VARIANTS.get("centroid-iters-8"))
    assert p2m.centroid_iterations == 8 and p2m.decode == "ot"
    _, train = command.make_configs(p, command.VARIANTS.get("r101"))
    assert train.backbone == p.backbone_r101
    _, train = command.make_configs(p, command.VARIANTS.get("swinl-cocopre"))
    assert train.backbone == p.backbone_swinl
    assert command.VARIANTS.get("full").supervision == "full"


def test_params_refuse_the_unimplemented_head_by_name():
    with pytest.raises(ValueError, match="point2mask.panoptic_head = 'panoptic-segformer'"):
        Point2MaskParams(panoptic_head="panoptic-segformer")
    with pytest.raises(ValueError, match="unit_number"):
        Point2MaskParams(unit_number="median")
