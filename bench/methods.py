"""The method contract: everything that writes runs a table row can cite registers here, once.

A **producer** is a method (``bestie``, ``p2seg``, …) or a shared stage that writes runs (``wsss``,
``segmentor``, ``reference``). Its registration names the params sections it reads, the code its stages
depend on, its variants (the table rows) and its **stage groups**: the templated ``dvc.yaml`` stages that
run those variants, each with the inputs it declares (another run's folder: WSSS maps, peaks, kept
weights, train labels). Everything else reads this registration:

- the CLI (``bench <producer>`` exists because the module registering it is a ``bench.commands`` module),
- params validation (``report.variants.<group>`` must name variants of that group),
- ``dvc.yaml``, generated from the groups (:mod:`bench.pipeline`; a test fails when it is stale),
- the report (a row's experiment must be a registered variant; which rows the active profile runs).

Registration happens when ``bench.commands`` imports its modules (:func:`bench.commands.load_commands`);
the registry is then frozen, and a late or duplicate registration raises, as detectron2's and
lm-evaluation-harness' registries do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.registry import Registry

#: The benchmark slots: the VOC-like instance benchmark and the COCO-like panoptic one.
SLOTS = ("voc", "coco")


@dataclass(frozen=True)
class StageGroup:
    """One templated ``dvc.yaml`` stage: runs of a producer's variants that share one shape of inputs.

    With :attr:`variants`, the stage is a matrix over ``report.variants.<name>`` (which of them the active
    profile runs); with :attr:`per_seed`, over ``report.seeds`` too (else seed 0 only). ``${item.variant}``
    and ``${item.seed}`` may appear in :attr:`args`, :attr:`deps`, :attr:`row` and :attr:`outs`.
    """

    name: str
    slot: str
    variants: tuple[str, ...] = ()
    #: command-line arguments after ``bench <runner> --dataset <slot>``
    args: str = "--variant ${item.variant} --seed ${item.seed}"
    #: inputs beyond the runner's code and the slot's canonical data: points, other runs' folders or files
    deps: tuple[str, ...] = ()
    #: the variant the output folder is named after (``${item.variant}-mrcnn`` for a segmentor row)
    row: str = "${item.variant}"
    per_seed: bool = True
    #: the producer whose command runs the stage (default: the producer that registers the group)
    runner: str | None = None
    #: params the stage reads instead of the runner's sections (dotted keys; ``section -key`` drops a key)
    params: tuple[str, ...] | None = None
    #: outputs (default: the run folder ``runs/<slot>/<producer>/<row>/seed<seed>``)
    outs: tuple[str, ...] | None = None

    def outputs(self, owner: str) -> tuple[str, ...]:
        """The output templates: :attr:`outs`, or the run folder ``runs/<slot>/<owner>/<row>/seed<seed>``."""
        return self.outs or (f"runs/{self.slot}/{owner}/{self.row}/seed${{item.seed}}",)

    def items(self, selected: list[str], seeds: list[int]) -> list[dict[str, str]]:
        """The matrix items the stage runs: ``{"variant", "seed"}`` per selected variant and seed."""
        variants = selected if self.variants else [""]
        return [{"variant": v, "seed": str(k)} for v in variants for k in (seeds if self.per_seed else [0])]

    def rows(self, selected: list[str]) -> list[str]:
        """The output variant names of the ``selected`` input variants (the one fixed row of a group without
        variants, which always runs)."""
        if not self.variants:
            return [self.row]
        return [self.row.replace("${item.variant}", v) for v in selected]


@dataclass(frozen=True)
class SameRun:
    """A row that is another row's run while a param has a value (P2Seg's ``hpr-0.2`` is the default run
    ``hrnet`` while ``mdm.hard_pixel_ratio`` is 0.2): no stage trains it twice; the report reads that run."""

    variant: str
    param: str
    value: Any


@dataclass(frozen=True)
class Producer:
    """A method or shared stage that writes ``runs/<slot>/<name>/<variant>/``."""

    name: str
    title: str
    #: params sections it reads; the first is its own (``mdm`` for P2Seg, which also reads ``bestie``)
    sections: tuple[str, ...]
    #: code paths its stages depend on (besides bench/commands/<module>.py, added by the registration)
    code: tuple[str, ...]
    #: variant name → its description (the table rows it feeds)
    variants: Mapping[str, str]
    groups: tuple[StageGroup, ...] = ()
    #: the paper (reports/specs/<paper>/) whose tables cite the producer's runs; None for shared stages
    paper: str | None = None
    #: the ``bench`` subcommand that runs it (default: its name)
    command: str | None = None
    #: whether its stages read the slot's ``data.<slot>`` section (the splits)
    reads_data: bool = True
    #: variant → the run it is the same as under a param value (:class:`SameRun`)
    same_runs: Mapping[str, SameRun] = field(default_factory=dict)
    #: variant → the input a user must supply to run it (no stage can make it here; run it by hand)
    external: Mapping[str, str] = field(default_factory=dict)
    module: str = ""  # filled in by register()

    @property
    def command_code(self) -> str:
        return self.module.replace(".", "/") + ".py"

    @property
    def command_name(self) -> str:
        return self.command or self.name


def segmentor_group(name: str, method: str, slot: str, variants: tuple[str, ...], arch: str = "mrcnn", *,
                    per_seed: bool = True) -> StageGroup:
    """Rows "pseudo labels → fully supervised segmentor" of ``method``: ``bench segment`` fine-tunes ``arch``
    (``mrcnn`` = Mask R-CNN, ``solov2``) on each variant's train labels, as the row ``<variant>-<arch>``."""
    option = "" if arch == "mrcnn" else f" --arch {arch}"
    return StageGroup(
        name, slot, variants, runner="segmentor", row=f"${{item.variant}}-{arch}", per_seed=per_seed,
        args=f"--labels {method}/${{item.variant}} --row {method}/${{item.variant}}-{arch}{option} "
             f"--seed ${{item.seed}}",
        deps=(f"runs/{slot}/pretrain", f"runs/{slot}/{method}/${{item.variant}}/seed${{item.seed}}/train_pseudo.json"))


PRODUCERS: Registry[Producer] = Registry("method")
#: Stage groups by name, over all producers (a group may write another producer's rows: segmentor groups).
GROUPS: Registry[tuple[str, StageGroup]] = Registry("stage group")


def register(producer: Producer, module: str) -> Producer:
    """Add a producer (called once, at import of its ``bench.commands`` module)."""
    registered = Producer(**{**producer.__dict__, "module": module})
    PRODUCERS.add(producer.name, registered)
    for group in producer.groups:
        if group.slot not in SLOTS:
            raise ValueError(f"stage group {group.name!r}: unknown slot {group.slot!r} (slots: {', '.join(SLOTS)})")
        GROUPS.add(group.name, (producer.name, group))
    return registered


def groups() -> Iterator[tuple[Producer, StageGroup]]:
    """Every stage group with the producer whose rows it writes: producers by name, each one's groups in the
    order it declares them (independent of the order the modules were imported in)."""
    for _, producer in PRODUCERS.items():
        for group in producer.groups:
            yield producer, group


def runner_of(owner: Producer, group: StageGroup) -> Producer:
    return PRODUCERS.get(group.runner) if group.runner else owner


def rows_of(name: str) -> set[str]:
    """Every variant of producer ``name`` that some stage group can write (with the full variant lists), and
    the variants that are the same run as one of those."""
    rows = {row for owner, group in groups() if owner.name == name for row in group.rows(list(group.variants))}
    producer = PRODUCERS.get(name)
    return rows | {v for v, rule in producer.same_runs.items() if rule.variant in rows} | set(producer.external)


def variant_runs(variants: Mapping[str, list[str]]) -> dict[tuple[str, str], set[str]]:
    """``(slot, producer)`` → the variants the stages write with the run lists ``variants``
    (``report.variants``; a group missing from it runs none)."""
    out: dict[tuple[str, str], set[str]] = {}
    for owner, group in groups():
        selected = list(variants.get(group.name, []))
        out.setdefault((group.slot, owner.name), set()).update(group.rows(selected))
    return out


def resolve(template: str, item: Mapping[str, str]) -> str:
    """A stage template with ``${item.variant}`` / ``${item.seed}`` replaced."""
    return template.replace("${item.variant}", item["variant"]).replace("${item.seed}", item["seed"])


#: Run folders the pipeline's per-slot skeleton writes (bench.pipeline.slot_stages), besides the groups'.
SKELETON_RUNS = tuple(f"runs/{slot}/pretrain" for slot in SLOTS)


def check_inputs_are_run(variants: Mapping[str, list[str]], seeds: list[int]) -> None:
    """Every run a selected stage reads (a ``runs/...`` dependency) is written by a selected stage: leaving
    ``points-partial`` out of ``report.variants.wsss-table4`` while BESTIE's point row runs is an error
    naming both, not a missing file half-way through ``dvc repro``."""
    written = set(SKELETON_RUNS)
    reads: list[tuple[str, str, str]] = []  # group, variant, path
    for owner, group in groups():
        for item in group.items(list(variants.get(group.name, [])), seeds):
            written.update(resolve(o, item) for o in group.outputs(owner.name))
            reads += [(group.name, item["variant"], resolve(d, item)) for d in group.deps if d.startswith("runs/")]
    for name, variant, path in reads:
        if any(path == out or path.startswith(out + "/") for out in written):
            continue
        makers = [f"report.variants.{g.name}" for o, g in groups() for item in g.items(list(g.variants), seeds)
                  if any(path == resolve(t, item) or path.startswith(resolve(t, item) + "/")
                         for t in g.outputs(o.name))]
        hint = f"; it is written by {' or '.join(sorted(set(makers)))}" if makers else ""
        raise ValueError(f"report.variants.{name}: {variant or name} reads {path}, which no selected stage writes"
                         f"{hint}")


def check_run_lists(variants: Mapping[str, list[str]]) -> None:
    """``report.variants``: every stage group with variants has a list (``dvc.yaml``'s matrix reads it; ``[]``
    runs none), every key is a stage group, every name one of that group's variants, none twice. Raises
    ``ValueError`` naming the key."""
    missing = [name for name, (_, group) in GROUPS.items() if group.variants and name not in variants]
    if missing:
        raise ValueError(f"report.variants: no list for stage group(s) {', '.join(missing)} (dvc.yaml reads one "
                         "per group; [] runs none; `bench params use <profile>` writes them all)")
    for key, names in variants.items():
        if key not in GROUPS:
            raise ValueError(f"report.variants.{key}: no stage group of that name (groups: {', '.join(GROUPS)})")
        _, group = GROUPS.get(key)
        if not group.variants:
            raise ValueError(f"report.variants.{key}: this stage group has no variants to choose (it always runs)")
        unknown = [n for n in names if n not in group.variants]
        if unknown:
            raise ValueError(f"report.variants.{key}: {', '.join(map(repr, unknown))} not variant(s) of this group "
                             f"(allowed: {', '.join(group.variants)})")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"report.variants.{key}: {', '.join(repeated)} listed more than once")
