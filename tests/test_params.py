"""params.yaml schema: defaults, profiles, and errors that name the key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from bench.config.loader import ParamsError, flatten, load_params, render_profile, validate_params

REPO = Path(__file__).resolve().parents[1]


def test_checked_in_params_yaml_is_the_rendered_embedded_profile():
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == render_profile("embedded")


@pytest.mark.parametrize("profile", ["embedded", "smoke", "voc", "coco"])
def test_every_profile_renders_to_valid_params_naming_itself(profile):
    params = validate_params(render_profile(profile))
    assert params.profile == profile


def test_paper_default_hard_pixel_ratio_is_0_2():
    assert render_profile("embedded")["mdm"]["hard_pixel_ratio"] == 0.2


def test_out_of_range_value_names_key_and_bound():
    raw = render_profile("embedded")
    raw["mdm"]["hard_pixel_ratio"] = 1.7
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    assert "mdm.hard_pixel_ratio = 1.7" in str(err.value)
    assert "less than or equal to 1" in str(err.value)


def test_unknown_key_is_rejected_with_the_allowed_keys():
    raw = render_profile("embedded")
    raw["mdm"]["hard_pixels"] = 0.3
    with pytest.raises(ParamsError, match=r"mdm.hard_pixels: unknown key \(allowed here: .*hard_pixel_ratio, .*\)"):
        validate_params(raw)


def test_unknown_section_is_rejected():
    raw = render_profile("embedded") | {"optimizer": {}}
    with pytest.raises(ParamsError, match="optimizer: unknown key"):
        validate_params(raw)


def test_wrong_type_names_the_key():
    raw = render_profile("embedded")
    raw["points"]["seed"] = "zero"
    with pytest.raises(ParamsError, match="points.seed = 'zero'"):
        validate_params(raw)


def test_load_params_names_the_file_on_bad_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("mdm: [unclosed\n")
    with pytest.raises(ParamsError, match=str(bad)):
        load_params(bad)


def test_flatten_gives_dotted_keys():
    assert flatten({"mdm": {"hard_pixel_ratio": 0.2}, "profile": "x"}) == {
        "mdm.hard_pixel_ratio": 0.2,
        "profile": "x",
    }


def test_required_section_names_are_fixed():
    sections = set(render_profile("embedded"))
    assert sections == {"profile", "data", "points", "wsss", "pretrain", "bestie", "mdm", "point2mask", "jtsm",
                        "segmentor", "eval", "tracking", "runtime", "report"}


def test_synthetic_generator_params_are_validated_at_params_load():
    raw = render_profile("embedded")
    raw["data"]["voc"]["synthetic"]["num_trian"] = 3
    with pytest.raises(ParamsError, match=r"data.voc: .*unknown parameter\(s\) \['num_trian'\]"):
        validate_params(raw)


def test_synthetic_params_on_a_real_source_are_rejected():
    raw = render_profile("voc")
    raw["data"]["voc"]["synthetic"] = {"num_train": 3}
    with pytest.raises(ParamsError, match="only for synthetic sources"):
        validate_params(raw)


@pytest.mark.parametrize("extra_convs, pam_layers, ok", [(3, [-1], True), (2, [-1], True), (3, [1, 3], True),
                                                         (2, [3], False), (3, [1, -3], False), (3, [0], False)])
def test_pam_layers_must_name_distinct_extra_convs_of_the_classifier(extra_convs, pam_layers, ok):
    raw = render_profile("embedded")
    raw["wsss"]["cam"].update(extra_convs=extra_convs, pam_layers=pam_layers)
    if ok:
        assert validate_params(raw).wsss.cam.pam_layers == pam_layers
    else:
        with pytest.raises(ParamsError, match="pam_layers"):
            validate_params(raw)


def test_the_paper_profiles_run_i2s_in_the_semantic_branch_and_the_embedded_one_only_after_training():
    """Paper Sec. 3.3 / the release: S = A^∘β·C is the semantic branch's output; the embedded 200-step
    budget keeps the semantic head's map (docs/p2seg.md, measured)."""
    assert all(render_profile(name)["mdm"]["semantic_from_affinity"] is True for name in ("voc", "coco"))
    assert validate_params(render_profile("embedded")).mdm.semantic_from_affinity is False


def test_a_variant_list_naming_an_unregistered_variant_is_rejected_naming_the_key():
    import bench.commands.params  # noqa: F401  registers the check, as the CLI does before any stage

    raw = render_profile("embedded")
    raw["report"]["variants"]["bestie-peaks"] = ["pam-l4", "pam-l9"]
    with pytest.raises(ParamsError, match=r"report.variants.bestie-peaks: 'pam-l9' not variant\(s\) of this group"):
        validate_params(raw)


def test_an_unknown_stage_group_is_rejected_with_the_groups():
    import bench.commands.params  # noqa: F401

    raw = render_profile("embedded")
    raw["report"]["variants"]["bestie_pam"] = ["pam-l4"]
    with pytest.raises(ParamsError, match="report.variants.bestie_pam: no stage group of that name"):
        validate_params(raw)


def test_a_stage_group_without_a_list_is_rejected():
    """dvc.yaml's matrix of every group reads its list: a missing one would stop `dvc repro` unexplained."""
    import bench.commands.params  # noqa: F401

    raw = render_profile("embedded")
    del raw["report"]["variants"]["bestie-peaks"]
    with pytest.raises(ParamsError, match="no list for stage group\\(s\\) bestie-peaks"):
        validate_params(raw)


def test_a_variant_list_naming_a_variant_twice_is_rejected():
    import bench.commands.params  # noqa: F401

    raw = render_profile("embedded")
    raw["report"]["variants"]["p2seg-sweep"] = ["hpr-0.4", "hpr-0.4"]
    with pytest.raises(ParamsError, match="hpr-0.4 listed more than once"):
        validate_params(raw)


def test_the_smoke_profile_runs_every_stage_group_with_a_subset_of_its_variants():
    smoke, full = (render_profile(p)["report"]["variants"] for p in ("smoke", "embedded-full"))
    assert smoke.keys() == full.keys()
    for group, names in smoke.items():
        assert names and set(names) <= set(full[group]), group


def test_the_embedded_profile_runs_a_subset_of_the_full_one():
    embedded, full = (render_profile(p)["report"]["variants"] for p in ("embedded", "embedded-full"))
    assert embedded.keys() == full.keys()
    assert all(set(names) <= set(full[group]) for group, names in embedded.items())
    assert sum(map(len, embedded.values())) < sum(map(len, full.values()))


def test_a_run_read_by_a_selected_stage_must_be_run_by_one():
    """BESTIE's segmentor row reads the labels of a BESTIE run: without that run it is an error naming both."""
    import bench.commands.params  # noqa: F401

    raw = render_profile("embedded")
    raw["report"]["variants"]["segment-bestie"] = ["image"]
    with pytest.raises(ParamsError, match=r"segment-bestie: image reads runs/voc/bestie/image/seed0/train_pseudo.json, "
                                          r"which no selected stage writes; "
                                          r"it is written by report.variants.bestie-image"):
        validate_params(raw)


def test_the_point_setting_maps_cannot_be_left_out_while_a_point_row_runs():
    import bench.commands.params  # noqa: F401

    raw = render_profile("embedded")
    raw["report"]["variants"]["wsss-table4"] = ["points-all"]
    with pytest.raises(ParamsError, match="runs/voc/wsss/points-partial/seed0, which no selected stage writes"):
        validate_params(raw)
