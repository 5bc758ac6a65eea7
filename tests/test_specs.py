"""Table specs: every spec validates, and every reported number occurs verbatim in its paper's text.

The verbatim checks read the papers' texts from ``$WSIS_PAPERS_DIR`` (default ``../shared/papers``
beside the repository; a relative path is read from the repository root). Without that folder they
are skipped; every other check runs anywhere.
"""

import os
import re
from pathlib import Path

import pytest
import yaml

from bench.report.specs import SpecError, TableSpec, load_spec, load_specs, papers

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "reports" / "specs"
# an absolute WSIS_PAPERS_DIR replaces REPO; unset or empty: the default
PAPERS_DIR = (REPO / (os.environ.get("WSIS_PAPERS_DIR") or "../shared/papers")).resolve()
SPEC_FILES = sorted(SPECS.glob("*/table*.yaml"))
PAPER_FILES = {paper: meta.text for paper, meta in papers(SPECS).items()}
EXPECTED_TABLES = {"p2seg": range(1, 7), "point2mask": range(1, 8), "bestie": range(1, 9), "jtsm": range(1, 9)}

needs_papers = pytest.mark.skipif(
    not PAPERS_DIR.is_dir(),
    reason=f"paper texts not found at {PAPERS_DIR}: set WSIS_PAPERS_DIR=/path/to/papers (the folder of "
    f"{', '.join(sorted(PAPER_FILES.values()))}) to check the reported numbers and captions verbatim",
)


def test_every_table_of_the_four_papers_has_a_spec():
    names = {s.name for s in load_specs(SPECS)}
    expected = {f"{paper}/table{n}" for paper, tables in EXPECTED_TABLES.items() for n in tables}
    assert names == expected


def _reported_literals(path: Path) -> list[tuple[str, str, str]]:
    """(row id, metric key, number as written in the YAML) for every reported cell."""
    root = yaml.compose(path.read_text(encoding="utf-8"))
    top = {k.value: v for k, v in root.value}
    cells = []
    for row in top["rows"].value:
        fields = {k.value: v for k, v in row.value}
        for key_node, value_node in fields.get("reported", yaml.MappingNode("", [])).value:
            if value_node.value not in ("null", "~", ""):
                cells.append((fields["id"].value, key_node.value, value_node.value))
    return cells


def _paper_text(paper: str) -> tuple[Path, str]:
    """The paper's text from PAPERS_DIR: with the folder present, a missing file is a failure, not a skip."""
    text_file = PAPERS_DIR / PAPER_FILES[paper]
    if not text_file.exists():
        pytest.fail(f"paper text {text_file.name} missing from {PAPERS_DIR} (WSIS_PAPERS_DIR)")
    return text_file, text_file.read_text(encoding="utf-8")


@needs_papers
@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_reported_numbers_occur_verbatim_in_the_paper(path):
    text_file, text = _paper_text(path.parent.name)
    missing = [
        f"{row}.{key}={literal}"
        for row, key, literal in _reported_literals(path)
        if not re.search(rf"(?<![\d.]){re.escape(literal)}(?!\d)", text)
    ]
    assert not missing, f"{path.name}: numbers not found in {text_file.name}: {missing}"


def test_a_claim_naming_an_unknown_row_is_rejected(tmp_path):
    spec = yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text())
    spec["claims"][0]["left"] = "no-such-row"
    with pytest.raises(ValueError, match="no-such-row"):
        TableSpec.model_validate(spec)


def test_a_reported_key_outside_the_columns_is_rejected():
    spec = yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text())
    spec["rows"][0]["reported"]["voc.mAP75"] = 1.0
    with pytest.raises(ValueError, match="not among the columns"):
        TableSpec.model_validate(spec)


def test_an_unknown_metric_key_lists_the_allowed_ones():
    spec = yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text())
    spec["columns"][0]["key"] = "voc.map50"
    with pytest.raises(ValueError, match="unknown metric key 'voc.map50'"):
        TableSpec.model_validate(spec)


def test_a_spec_in_the_wrong_place_names_the_file(tmp_path):
    target = tmp_path / "bestie" / "table5.yaml"
    target.parent.mkdir()
    target.write_text((SPECS / "p2seg" / "table5.yaml").read_text())
    with pytest.raises(SpecError, match=str(target)):
        load_spec(target)


def test_rows_fed_by_an_experiment_are_found_across_tables():
    from bench.report.specs import rows_fed_by

    fed = rows_fed_by(load_specs(SPECS), slot="voc", method="p2seg", variant="hpr-0.2")
    assert "p2seg/table5:hpr-0.2" in fed
    assert rows_fed_by(load_specs(SPECS), slot="coco", method="p2seg", variant="hpr-0.2") == []


def test_rows_fed_through_columns_from_are_found():
    from bench.report.specs import rows_fed_by

    fed = rows_fed_by(load_specs(SPECS), slot="voc", method="wsss", variant="cam")
    assert "bestie/table4:pmm" in fed


def test_every_figure_spec_loads():
    from bench.report.specs import load_figures

    assert [f.name for f in load_figures(SPECS)] == ["bestie/figure6"]


@needs_papers
def test_every_figure_caption_is_the_papers():
    from bench.report.specs import load_figures

    for figure in load_figures(SPECS):
        _, text = _paper_text(figure.paper)
        assert f"Figure {figure.figure}. {figure.caption}" in text


def test_a_row_citing_a_method_nobody_registered_is_an_error_not_pending():
    from bench.report.specs import experiment_errors

    spec = yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text())
    spec["rows"][0]["reproduce"] = {"method": "p2sge", "variant": "hpr-0.1"}
    produced = {"p2seg": {"hpr-0.1", "hpr-0.2", "hpr-0.4", "hpr-0.8", "hrnet"}}
    errors = experiment_errors([TableSpec.model_validate(spec)], [], produced)
    assert len(errors) == 1 and "'p2sge' is neither a registered method" in errors[0]


def test_a_row_citing_an_unproduced_variant_of_a_registered_method_is_an_error():
    from bench.report.specs import experiment_errors

    spec = TableSpec.model_validate(yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text()))
    errors = experiment_errors([spec], [], {"p2seg": {"hpr-0.1", "hpr-0.4", "hpr-0.8", "hrnet"}})
    assert errors == ["p2seg/table5 hpr-0.2: p2seg/hpr-0.2 is not a row any stage group of p2seg writes "
                      "(bench/commands/*: StageGroup)"]


def test_a_pending_method_of_a_paper_with_specs_is_not_an_error():
    from bench.report.specs import experiment_errors

    specs = [s for s in load_specs(SPECS) if s.paper == "point2mask"]
    cited = {e.method for s in specs for r in s.rows for e in r.sources([c.key for c in s.columns])}
    produced = {m: {"*"} for m in cited - {"point2mask"}}  # the other methods' rows: checked elsewhere
    errors = experiment_errors(specs, [], produced)
    assert not [e for e in errors if "point2mask" in e.split(":")[1]]


def test_a_paper_folder_without_paper_yaml_names_the_file(tmp_path):
    target = tmp_path / "newpaper" / "table1.yaml"
    target.parent.mkdir()
    spec = yaml.safe_load((SPECS / "p2seg" / "table5.yaml").read_text())
    target.write_text(yaml.safe_dump({**spec, "paper": "newpaper", "table": "1"}))
    with pytest.raises(SpecError, match="paper.yaml"):
        load_spec(target)
