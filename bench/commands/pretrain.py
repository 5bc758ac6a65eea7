"""``bench pretrain`` — classification pre-training of the methods' backbones (stage ``pretrain``).

Writes ``runs/<slot>/pretrain/<backbone>.pt`` (the timm feature extractor's ``state_dict``) for every
backbone in ``pretrain.backbones``, ``run.json`` (what ran, the held-out scores and their history) and
the DVC metric ``metrics/pretrain/<slot>.json``. Methods read the weights with
``backbone_init: pretrain`` (``bestie``, ``mdm``). The images are a separate stream of the slot's
synthetic generator (:func:`datasets.synthetic.render_classification_set`), labelled with the classes
present only: the synthetic profiles' stand-in for the ImageNet weights the papers start from
(docs/pretrain.md).

With ``runtime.nproc_per_node`` × ``runtime.nnodes`` above 1 the command re-launches itself under torchrun
(methods/distributed.py, docs/scaling.md): every rank trains on its share of each global batch, rank 0 alone
writes the outputs and the MLflow run, after a barrier that every rank reaches only when its training succeeded.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.config.loader import load_params
from bench.io import atomic_path, write_json, write_run_record
from bench.paths import METRICS, pretrain_dir
from bench.stages.base import declare_stage, run_stage
from bench.tracking import environment_record

log = logging.getLogger(__name__)
STAGE = declare_stage("pretrain", "pretrain", "data")


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    from methods.distributed import distributed, relaunch_under_torchrun

    # runtime is read here, not through the stage's params view: how many processes train is no DVC dependency
    runtime = load_params(Path(args.params)).runtime
    relaunch_under_torchrun(["bench.cli", *(["-v"] if getattr(args, "verbose", False) else []), "pretrain",
                             "--dataset", args.dataset, "--params", args.params],
                            nproc_per_node=runtime.nproc_per_node, nnodes=runtime.nnodes)
    with distributed() as world:
        return _pretrain(args, world)


def _pretrain(args: argparse.Namespace, world: Any) -> int:
    from methods.distributed import written_by_main

    tags = {f"runtime.{k}": v for k, v in world.tags().items()}
    with run_stage(STAGE, params_path=Path(args.params), dataset=args.dataset, extra_tags=tags) as ctx:
        import torch

        from datasets.synthetic import PRESETS, render_classification_set
        from methods.backbones import PretrainConfig, pretrain_classifier
        from methods.runtime import backend_settings, cap_cpu_threads

        p, slot = ctx.params.pretrain, getattr(ctx.params.data, args.dataset)
        ctx.run.set_tags({f"backend.{k}": v for k, v in backend_settings().items()})  # cuDNN flags etc. on CUDA
        if p.backbones and slot.source not in PRESETS:
            raise ValueError(f"pretrain: data.{args.dataset}.source is {slot.source!r} (real data); pre-training "
                             "renders synthetic images — set pretrain.backbones: [] and point bestie.backbone_init / "
                             "mdm.backbone_init at a folder of ImageNet checkpoints")
        record: dict[str, Any] = {"dataset": args.dataset, "profile": ctx.profile, "cpu_threads": cap_cpu_threads(),
                                  **environment_record(),
                                  "backbones": {}, "timing": {}}
        if world.size > 1:
            record["distributed"] = {**world.tags(), "batch_per_rank": p.batch_size // world.size}
        # rank 0 writes, once every rank got through (methods.distributed.written_by_main); the others get None
        with written_by_main(lambda: atomic_path(pretrain_dir(args.dataset), directory=True)) as out:
            if p.backbones:
                t0 = time.perf_counter()
                images, labels = render_classification_set(slot.source, p.images + p.val_images, **slot.synthetic)
                record["timing"]["render_seconds"] = round(time.perf_counter() - t0, 2)
                record["images"] = {"train": p.images, "val": p.val_images, "class_frequency":
                                    [round(float(f), 4) for f in labels[:p.images].mean(0)]}
            config = PretrainConfig(iterations=p.iterations, batch_size=p.batch_size, lr=p.lr,
                                    weight_decay=p.weight_decay, warmup_fraction=p.warmup_fraction, seed=p.seed)
            for name in p.backbones:
                t0 = time.perf_counter()
                result = pretrain_classifier(
                    name, images[:p.images], labels[:p.images],
                    images[p.images:], labels[p.images:], config, desc=f"pretrain {name}",
                    on_eval=lambda step, entry, name=name: ctx.run.log_metrics(
                        {f"{name}.{k}": v for k, v in entry.items() if k != "step"}, step=step))
                if out is not None:
                    torch.save(result.state_dict, out / f"{name}.pt")
                record["backbones"][name] = result.summary()
                record["timing"][f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
                log.info("%s: pretrain %s: held-out mAP %.1f, exact match %.1f %%", args.dataset, name,
                         result.metrics["val.mAP"], result.metrics["val.exact_match"])
            if out is not None:
                write_run_record(out / "run.json", record)
                ctx.run.log_artifact(out / "run.json")
        if world.is_main:
            summary = {f"{name}.{k}": v for name, b in record["backbones"].items() for k, v in b["metrics"].items()}
            write_json(METRICS / "pretrain" / f"{args.dataset}.json", summary)
    return 0


COMMANDS.add("pretrain", Command("pre-train the methods' backbones on synthetic image-level classification "
                                 "(stand-in for ImageNet weights)", _configure, _handle))
