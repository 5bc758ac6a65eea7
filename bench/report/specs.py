"""Result-table specifications: each paper table declared as data (``reports/specs/<paper>/table<N>.yaml``),
and the figures that plot a metric over training (``figure<N>.yaml``).

A spec holds the paper's reported numbers verbatim, the experiment that reproduces each
row (or ``reported-only`` for methods outside the four), and the paper's qualitative
claims as comparisons between rows. Tables are rendered only from specs + metrics files.
Each paper's folder holds ``paper.yaml`` (its name, title, arXiv id and the file name of its text).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A paper's folder name under reports/specs/ (its id in specs, run folders and reports).
PaperId = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
#: Metric keys a column may name (values in percent, counts as numbers); see docs/formats.md.
METRIC_KEYS = (
    *(f"voc.mAP{t}" for t in (25, 50, 70, 75)),
    *(f"voc.train.mAP{t}" for t in (25, 50, 70, 75)),
    *(f"coco.{kind}.{m}" for kind in ("segm", "bbox") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")),
    *(f"pq.{m}{part}" for m in ("PQ", "SQ", "RQ") for part in ("", "_th", "_st")),
    "semantic.mIoU", "semantic.train.mIoU",
    "pseudo.n_iou50", "pseudo.n_iou70", "pseudo.n_iou90", "pseudo.mean_iou", "pseudo.tp50",
    "wsod.AP50", "wsod.AP50_07", "wsod.CorLoc",
)
#: The metric keys that count things (instances, masks): printed without decimals when whole.
COUNT_KEYS = ("pseudo.n_iou50", "pseudo.n_iou70", "pseudo.n_iou90", "pseudo.tp50")
EMBEDDED_DATASETS = ("synth-voc", "synth-coco")
#: Embedded dataset of a spec → the pipeline slot that holds it in every profile.
SLOT_OF = {"synth-voc": "voc", "synth-coco": "coco"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    key: str = Field(description="metric key in the metrics JSON (see METRIC_KEYS)")
    label: str = Field(description="column header as printed in the paper")

    @model_validator(mode="after")
    def _known_key(self) -> "Column":
        if self.key not in METRIC_KEYS:
            raise ValueError(f"unknown metric key {self.key!r}; allowed: {', '.join(METRIC_KEYS)}")
        return self


class Paper(_Strict):
    """``reports/specs/<paper>/paper.yaml``: what the reports call the paper and where its text is."""

    name: str = Field(description="short name printed in the reports (BESTIE)")
    title: str
    authors: str
    arxiv: str | None = Field(default=None, pattern=r"^[0-9]{4}\.[0-9]{4,5}$")
    text: str = Field(description="file name of the paper's text (the folder: WSIS_PAPERS_DIR, tests/test_specs.py)")
    order: int = Field(ge=0, description="position in the reports")

    @property
    def citation(self) -> str:
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{self.name}: \"{self.title}\" ({self.authors}{arxiv})"


@cache
def papers(root: Path) -> dict[str, Paper]:
    """Every paper with specs under ``root``, in report order (``paper.yaml`` of each folder)."""
    found = {}
    for path in sorted(root.glob("*/paper.yaml")):
        try:
            found[path.parent.name] = Paper.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise SpecError(f"{path}: {exc}") from exc
    return dict(sorted(found.items(), key=lambda item: item[1].order))


class Experiment(_Strict):
    """The harness experiment that reproduces a row: ``<method>/<variant>`` on the table's dataset; the method
    is a registered producer (bench/methods.py) or, pending its implementation, the table's own paper."""

    method: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    variant: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    dataset: Literal[EMBEDDED_DATASETS] | None = Field(  # type: ignore[valid-type]
        default=None, description="overrides the table's reproduced_on for this row"
    )

    @property
    def name(self) -> str:
        return f"{self.method}/{self.variant}"


class Row(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    label: str
    group: str | None = Field(default=None, description="section of the table (e.g. supervision)")
    details: dict[str, str] = Field(default_factory=dict, description="extra printed columns (backbone, ...)")
    reported: dict[str, float | None] = Field(default_factory=dict, description="metric key → number as printed")
    reproduce: Experiment | Literal["reported-only"]
    columns_from: dict[str, Experiment] = Field(
        default_factory=dict,
        description="metric key → the experiment whose metrics fill that column for this row, when it is not "
                    "the row's own (e.g. BESTIE Table 4's mIoU is the WSSS maps' mIoU: wsss/pam)",
    )

    def source(self, key: str) -> Experiment | None:
        """The experiment whose metrics fill column ``key`` of this row (None for reported-only rows)."""
        if key in self.columns_from:
            return self.columns_from[key]
        return self.reproduce if isinstance(self.reproduce, Experiment) else None

    def sources(self, keys: list[str]) -> list[Experiment]:
        """The distinct experiments behind this row's cells ``keys``: the row's own first."""
        own = [self.reproduce] if isinstance(self.reproduce, Experiment) else []
        found: list[Experiment] = []
        for experiment in [*own, *(self.source(k) for k in keys)]:
            if experiment is not None and experiment not in found:
                found.append(experiment)
        return found


class Claim(_Strict):
    """A qualitative claim of the paper: ``left <op> right`` on ``metric``."""

    text: str
    left: str
    op: Literal[">", ">=", "<", "<=", "~"]
    right: str
    metric: str
    tolerance: float = Field(default=0.0, ge=0, description="for '~': |left − right| ≤ tolerance")


class Sweep(_Strict):
    """A table whose rows sweep one hyper-parameter: plotted as metric against ``x``.

    ``current_row`` (optional) is a row whose run reads the parameter from ``params.yaml``
    (``current_param``, a dotted path): it is drawn as its own point at the configured value, so a
    ``dvc exp run -S <current_param>=v`` shows up in the table and the plot as "this experiment"."""

    x_label: str
    metric: str
    x: dict[str, float] = Field(min_length=2, description="row id → value of the swept parameter")
    current_row: str | None = None
    current_param: str | None = None

    @model_validator(mode="after")
    def _current(self) -> "Sweep":
        if (self.current_row is None) != (self.current_param is None):
            raise ValueError("sweep: give both current_row and current_param, or neither")
        if self.current_row is not None and self.current_row in self.x:
            raise ValueError(f"sweep: current_row {self.current_row!r} must not be one of the fixed x rows")
        return self


class TableSpec(_Strict):
    paper: str = PaperId
    table: str = Field(pattern=r"^[0-9]+$", description="table number as in the paper")
    caption: str
    paper_dataset: str
    reproduced_on: Literal[EMBEDDED_DATASETS]  # type: ignore[valid-type]
    columns: list[Column] = Field(min_length=1)
    rows: list[Row] = Field(min_length=1)
    claims: list[Claim] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    sweep: Sweep | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "TableSpec":
        keys = {c.key for c in self.columns}
        ids = [r.id for r in self.rows]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate row ids: {sorted(dup)}")
        for row in self.rows:
            extra = set(row.reported) - keys
            if extra:
                raise ValueError(f"row {row.id!r} reports keys not among the columns: {sorted(extra)}")
            extra = set(row.columns_from) - keys
            if extra:
                raise ValueError(f"row {row.id!r} takes columns_from keys that are not columns: {sorted(extra)}")
            for key, value in row.reported.items():
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"row {row.id!r} {key}: not a finite number")
        for claim in self.claims:
            for side in (claim.left, claim.right):
                if side not in ids:
                    raise ValueError(f"claim {claim.text!r} names unknown row {side!r}")
            if claim.metric not in keys:
                raise ValueError(f"claim {claim.text!r} uses metric {claim.metric!r} that is not a column")
        if self.sweep is not None:
            if self.sweep.metric not in keys:
                raise ValueError(f"sweep metric {self.sweep.metric!r} is not a column")
            unknown = set(self.sweep.x) - set(ids)
            if self.sweep.current_row is not None and self.sweep.current_row not in ids:
                unknown.add(self.sweep.current_row)
            if unknown:
                raise ValueError(f"sweep names unknown rows: {sorted(unknown)}")
        return self

    @property
    def name(self) -> str:
        return f"{self.paper}/table{self.table}"


#: Metrics recorded over training (``"curves"`` of a metrics file) that a figure may plot.
CURVE_KEYS = ("pseudo.tp50", "pseudo.n_iou50", "pseudo.mean_iou")


class Series(_Strict):
    """One line of a figure: a label and the experiment whose curve it draws."""

    label: str
    reproduce: Experiment


class FigureSpec(_Strict):
    """A paper figure that plots a metric over training (``reports/specs/<paper>/figure<N>.yaml``).

    The paper's curves are not in its text, so ``reported`` says in words what the figure shows;
    the reproduced curves (mean ± std over seeds per step) are tabulated and plotted."""

    paper: str = PaperId
    figure: str = Field(pattern=r"^[0-9]+$", description="figure number as in the paper")
    caption: str
    paper_dataset: str
    reproduced_on: Literal[EMBEDDED_DATASETS]  # type: ignore[valid-type]
    metric: Literal[CURVE_KEYS]  # type: ignore[valid-type]
    x_label: str
    y_label: str
    reported: str = Field(description="what the paper's figure shows, in words")
    series: list[Series] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> "FigureSpec":
        labels = [s.label for s in self.series]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate series labels: {labels}")
        return self

    @property
    def name(self) -> str:
        return f"{self.paper}/figure{self.figure}"


class SpecError(ValueError):
    """A spec file that does not parse or validate; the message names the file."""


_Spec = TypeVar("_Spec", TableSpec, FigureSpec)


def _load(path: Path, model: type[_Spec], kind: str, number: str) -> _Spec:
    """Load and validate one spec file of ``kind`` (table / figure); errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = model.model_validate(yaml.safe_load(f))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    n = getattr(spec, number)
    expected = f"{kind}{n}.yaml"
    if path.name != expected or path.parent.name != spec.paper:
        raise SpecError(f"{path}: a spec of {spec.paper} {kind} {n} must live at {spec.paper}/{expected}")
    if spec.paper not in papers(path.parent.parent.resolve()):  # cached per folder, not per cwd-relative path
        raise SpecError(f"{path}: no {path.parent / 'paper.yaml'} (name, title, authors, arxiv, text, order)")
    return spec


def load_spec(path: Path) -> TableSpec:
    """Load and validate one table spec file."""
    return _load(path, TableSpec, "table", "table")


def load_figure(path: Path) -> FigureSpec:
    """Load and validate one figure spec file."""
    return _load(path, FigureSpec, "figure", "figure")


def load_figures(root: Path) -> list[FigureSpec]:
    """Every figure spec under ``root`` (``<paper>/figure<N>.yaml``), sorted by paper then number."""
    specs = [load_figure(p) for p in sorted(root.glob("*/figure*.yaml"))]
    order = list(papers(root.resolve()))
    return sorted(specs, key=lambda s: (order.index(s.paper), int(s.figure)))


def load_specs(root: Path) -> list[TableSpec]:
    """Every spec under ``root`` (``<paper>/table<N>.yaml``), sorted by paper then table number."""
    specs = [load_spec(p) for p in sorted(root.glob("*/table*.yaml"))]
    order = list(papers(root.resolve()))
    return sorted(specs, key=lambda s: (order.index(s.paper), int(s.table)))


def row_slot(spec: TableSpec, experiment: Experiment) -> str:
    """The pipeline slot (``voc`` / ``coco``) an experiment row of ``spec`` runs on."""
    return SLOT_OF[experiment.dataset or spec.reproduced_on]


def rows_fed_by(specs: list[TableSpec], *, slot: str, method: str, variant: str) -> list[str]:
    """``paper/table<N>:row`` for every spec row that the experiment ``method/variant`` on ``slot`` fills
    (as the row's own experiment or through ``columns_from``)."""
    return [
        f"{spec.name}:{row.id}"
        for spec in specs
        for row in spec.rows
        if any((e.method, e.variant) == (method, variant) and row_slot(spec, e) == slot
               for e in row.sources([c.key for c in spec.columns]))
    ]


def experiment_errors(specs: list[TableSpec], figures: list[FigureSpec], produced: dict[str, set[str]]) -> list[str]:
    """Every row, column source and figure series whose experiment no stage can produce: ``produced`` maps a
    registered producer to the variants its stage groups write (bench.methods.rows_of). A method that is not
    registered may only be one of the papers with specs (its implementation pending); anything else is a typo."""
    pending = {spec.paper for spec in [*specs, *figures]} - set(produced)
    errors = []
    cited = [(spec.name, row.id, e) for spec in specs for row in spec.rows
             for e in row.sources([c.key for c in spec.columns])]
    cited += [(spec.name, series.label, series.reproduce) for spec in figures for series in spec.series]
    for name, where, experiment in cited:
        if experiment.method in produced:
            if experiment.variant not in produced[experiment.method]:
                errors.append(f"{name} {where}: {experiment.name} is not a row any stage group of "
                              f"{experiment.method} writes (bench/commands/*: StageGroup)")
        elif experiment.method not in pending:
            errors.append(f"{name} {where}: {experiment.method!r} is neither a registered method "
                          f"({', '.join(sorted(produced))}) nor a paper whose method is pending")
    return errors
