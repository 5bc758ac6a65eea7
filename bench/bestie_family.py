"""What the stages of BESTIE and of the methods built on its network (P2Seg) share: the config from the
validated params, the kept network, val inference, the export of train labels and the training-free rules.

Not a command module: ``bench bestie`` and ``bench p2seg`` (and the benchmarks) import it, so neither
command imports the other.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from bench import predictions as P
from bench.evaluation.records import InstancePredictions
from bench.inputs import Cues, image_label_classes, load_cues, load_semantic_maps
from bench.io import write_json
from bench.paths import backbone_checkpoint, points_file
from bench.stages.run import RunFolder, load_weights
from datasets.canonical import CanonicalSplit


def make_config(p: Any, supervision: str, seed: int, options: dict[str, Any], *, slot: str = "voc") -> Any:
    """The validated ``bestie`` section → :class:`methods.bestie.train.BestieConfig` (+ variant options);
    ``slot`` locates the backbone checkpoint ``backbone_init`` names (:func:`bench.paths.backbone_checkpoint`)."""
    from methods.bestie import ClusterConfig, LossWeights
    from methods.bestie.train import BestieConfig

    cluster = ClusterConfig(magnitude_threshold=p.cluster_magnitude, area=p.cluster_area, epsilon=p.cluster_epsilon,
                            inclusive=p.cluster_bounds == "inclusive", min_distance=p.cluster_min_distance,
                            min_center=p.cluster_min_center, center=p.cluster_center)
    shared = {f.name: getattr(p, f.name) for f in dataclasses.fields(BestieConfig) if f.name in type(p).model_fields}
    config = BestieConfig(**{
        **shared, "supervision": supervision, "seed": seed,
        "backbone_weights": backbone_checkpoint(slot, p.backbone_init, p.backbone),
        "out_indices": tuple(p.out_indices), "scale_range": (p.scale_min, p.scale_max),
        "cluster": cluster if p.cluster else None,
        "loss_weights": LossWeights(p.lambda_center, p.lambda_offset, p.lambda_semantic), "combine": p.loss_combine,
        "hard_pixel_ratio": p.hard_pixel_ratio if p.semantic_loss == "hard-pixel" else None,
        "flip_tta": p.flip_tta == "all" or (p.flip_tta == "points" and supervision == "points"),
    })
    return dataclasses.replace(config, **options)


def kept_network(source: Path, num_semantic: int, num_things: int, config: Any, *,
                 model_factory: Callable[[], Any] | None = None) -> Any:
    """The network a training run kept (``<source>/model.pt``), rebuilt for ``config``; the config it was
    trained with must build the same network (backbone, levels, decoder, widths)."""
    import json

    from methods.bestie.train import build_model, network_options

    kept = load_weights(source)
    config = dataclasses.replace(config, backbone_weights=None)  # every weight comes from the kept state

    def architecture(options: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({k: v for k, v in options.items() if k != "backbone_weights"}))

    wanted = architecture(network_options(config))
    trained = architecture({k: kept["config"].get(k) for k in wanted})
    if trained != wanted:
        raise ValueError(f"{source}/model.pt was trained with network {trained}, this row needs {wanted}; "
                         "re-run the source's training stage")
    model = model_factory() if model_factory is not None else build_model(num_semantic, num_things, config)
    model.load_state_dict(kept["model"])
    return model.eval()


def predict_val(model: Any, run: RunFolder, things: list[int], config: Any, desc: str) -> list[dict]:
    """Inference on the val split (Sec. 3.2 of BESTIE; P2Seg infers the same way): instance records.
    With ``config.val_clean`` (release ``--val_clean``) it reads the val image labels and, in the point
    setting, the val points (``data/points/<slot>/<val>_<point_mode>.json``)."""
    from methods.bestie.train import infer_instances, predict_outputs

    val = run.val
    classes, dataset = val.dataset.semantic_classes, val.dataset
    images = [val.load_image(im.id) for im in val.images]
    present: dict[int, list[int]] = {}
    points: dict[int, Cues] = {}
    if config.val_clean:
        present = image_label_classes(val)
        if config.supervision == "points":
            points = load_cues(points_file(run.slot, val.name, run.info["points_mode"]), val, dataset)
    records: list[dict] = []
    predicted = predict_outputs(model, images, flip_tta=config.flip_tta, flip_tta_offsets=config.flip_tta_offsets)
    for im, outputs in tqdm(zip(val.images, predicted), total=len(images), desc=desc, unit="img", leave=False):
        cues = points.get(im.id)
        found = infer_instances(outputs, things, config, present=present.get(im.id),
                                points=None if cues is None else (cues.yx, cues.classes))
        records += P.instance_records(im.id, [f.mask for f in found], [classes[f.cls] for f in found],
                                      [f.score for f in found])
    return records


def pseudo_records(image_id: int, found: list[tuple[Any, int | None]], semantic_classes: list[int],
                   annotation_ids: list[int | None]) -> list[dict]:
    """``train_pseudo.json`` records of one image: COCO results (RLE, bbox, score) with
    ``point_annotation_id`` = the GT annotation id of the cue an instance was grouped to, ``null``
    for cues without one (image-setting peaks)."""
    records = P.instance_records(image_id, [i.mask for i, _ in found], [semantic_classes[i.cls] for i, _ in found],
                                 [i.score for i, _ in found])
    for record, (_, cue) in zip(records, found):
        record["point_annotation_id"] = None if cue is None else annotation_ids[cue]
    return records


#: A training-free rule on one image: (WSSS map, its cues) → instances as (mask, semantic index, cue
#: index) and the rule's counts (an object with ``add`` and ``to_dict``).
Rule = Callable[[np.ndarray, Cues], tuple[list[tuple[np.ndarray, int, int]], Any]]


def transfer_rule(min_area: int) -> Rule:
    """BESTIE's semantic knowledge transfer as a rule: the components with exactly one cue."""
    from methods.bestie import pseudo_instances

    def rule(semantic: np.ndarray, cues: Cues) -> tuple[list[tuple[np.ndarray, int, int]], Any]:
        found, stats = pseudo_instances(semantic, cues.yx, cues.classes, min_area=min_area)
        return [(f.mask, f.semantic_class, f.cue) for f in found], stats

    return rule


def rule_records(split: CanonicalSplit, maps: dict[int, np.ndarray], cues: dict[int, Cues], rule: Rule,
                 tag: bool) -> tuple[list[dict], dict[str, int]]:
    """A training-free rule's instances on every image of ``split``, score 1 (tagged with the cues'
    annotation ids when ``tag``), and its summed counts."""
    classes, records, total = split.dataset.semantic_classes, [], None
    for image in split.images:
        c = cues[image.id]
        found, stats = rule(maps[image.id], c)
        if total is None:
            total = stats
        else:
            total.add(stats)
        records += P.instance_records(
            image.id, [m for m, _, _ in found], [classes[k] for _, k, _ in found], [1.0] * len(found),
            point_annotation_ids=[c.annotation_ids[i] for _, _, i in found] if tag else None)
    return records, {} if total is None else total.to_dict()


def write_rule_outputs(run: RunFolder, wsss: Path, point_mode: str, rule: Rule) -> dict[str, dict[str, int]]:
    """A training-free rule as a run (BESTIE's ``transfer-only``, P2Seg's ``s2i-transfer``): its
    instances of the wsss run's maps from the points — on val (val maps and the **val** points:
    BESTIE and P2Seg never see those) and on train (tagged with the points' annotation ids); the
    counts per split."""
    if not (wsss / P.SEMANTIC_DIR).is_dir():
        raise FileNotFoundError(f"{wsss / P.SEMANTIC_DIR}: the {run.info['variant']} variant needs the wsss run's "
                                "val maps")
    stats = {}
    for split, folder, target, tag in ((run.val, P.SEMANTIC_DIR, P.INSTANCES, False),
                                       (run.train, P.TRAIN_SEMANTIC_DIR, P.PSEUDO, True)):
        cues = load_cues(points_file(run.slot, split.name, point_mode), split, run.dataset)
        records, stats[split.name] = rule_records(split, load_semantic_maps(wsss / folder, split), cues, rule, tag)
        write_json(run.out / target, records, indent=None)
    return stats


#: How many points of its class a predicted mask holds: the rule keeps "one".
HELD = ("none", "one", "several")


def points_held(mask: np.ndarray, cues: Cues, semantic_class: int) -> int:
    """How many of the image's points of ``semantic_class`` lie on the mask's pixels (a point counts
    once per mask)."""
    yx = cues.yx[cues.classes == semantic_class].reshape(-1, 2)
    return int(mask[yx[:, 0], yx[:, 1]].sum())


def held(n: int) -> str:
    """The rule's name for a mask holding ``n`` points of its class: one of :data:`HELD`."""
    return HELD[min(n, 2)]


def one_point_instances(
    predictions: InstancePredictions, points: Mapping[int, Cues], semantic_index: Callable[[int], int]
) -> tuple[list[int], Counter[str]]:
    """File positions of the records whose mask holds exactly one point of the record's class (the
    one-point rule of BESTIE's semantic knowledge transfer, Sec. 3.3, applied to predicted masks), and
    how many records held none / one / several. ``points``: the cues of every image of the split
    (:func:`~bench.inputs.load_cues`); an image without points keeps nothing."""
    kept: list[int] = []
    counts: Counter[str] = Counter({name: 0 for name in HELD})
    for image_id, records in predictions.by_image.items():
        for record in records:
            n = points_held(mask_utils.decode(record["segmentation"]).astype(bool), points[image_id],
                            semantic_index(record["category_id"]))
            counts[held(n)] += 1
            if n == 1:
                kept.append(record["index"])
    return sorted(kept), counts


def curve_steps(iterations: int, points: int) -> list[int]:
    """``points`` training steps evenly spaced over the schedule, the last one final (BESTIE Fig. 6)."""
    return sorted({max(1, round(k * iterations / points)) for k in range(1, points + 1)}) if points else []


def sample_arrays(samples: list[Any]) -> Iterator[np.ndarray]:
    """The arrays a round trains on (images, maps, pseudo targets): its checkpoint's data fingerprint."""
    for sample in samples:
        t = sample.targets
        yield from (sample.image, sample.semantic, t.instance_map, t.centers, t.classes, t.cues, t.cue_classes)


def checkpointing(run: RunFolder, name: str, config: Any, samples: list[Any], every: int) -> Any:
    """Resumable training state ``<partial>/<name>.pt`` every ``every`` steps (None when 0), fingerprinted by
    the training config and the bytes of the samples it trains on."""
    from methods.checkpointing import Checkpointing

    if not every:
        return None
    path, fingerprint = run.checkpoint(name, config.to_dict(), sample_arrays(samples))
    return Checkpointing(path, fingerprint, every)
