"""What the ``bench jtsm`` stages and the JTSM benchmarks share (not a command module, so both can import it):
the config from the validated ``jtsm`` section, the class layout and image labels, the cached proposals of a
split, and the writer of a run's prediction files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.io import write_json
from bench.paths import run_dir
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.errors import DatasetError

#: The variant whose run holds the cached proposals every other JTSM run reads (unseeded: seed0).
PROPOSALS = "proposals"


def make_jtsm_config(p: Any, options: dict[str, Any] | None = None) -> Any:
    """The validated ``jtsm`` section → :class:`~methods.jtsm.config.JtsmConfig`: every field of the same name
    copied (the section is generated from the dataclass), then a variant's ``options``."""
    from methods.jtsm.config import JtsmConfig

    config = JtsmConfig(**{f.name: getattr(p, f.name) for f in dataclasses.fields(JtsmConfig)})
    return dataclasses.replace(config, **(options or {}))


def proposal_config(p: Any) -> Any:
    """The generator settings of the ``jtsm`` section → :class:`datasets.proposals.ProposalConfig`."""
    from datasets.proposals import ProposalConfig

    return ProposalConfig(colour_spaces=tuple(p.proposal_colour_spaces), scales=tuple(p.proposal_scales),
                          sigma=p.proposal_sigma, max_proposals=p.max_proposals)


def proposals_folder(slot: str) -> Path:
    return run_dir(slot, "jtsm", PROPOSALS) / "seed0"


def class_layout(dataset: CanonicalDataset, things_only: bool) -> tuple[list[int], list[int]]:
    """The network's classes as category ids: thing ids, then stuff ids (none with ``things_only``), each in
    the dataset's semantic order."""
    cats = [c for c in dataset.semantic_classes if c != dataset.void_label]
    things = [c for c in cats if dataset.category_by_id[c].isthing]
    return things, ([] if things_only else [c for c in cats if not dataset.category_by_id[c].isthing])


def label_vectors(split: CanonicalSplit, classes: list[int]) -> dict[int, np.ndarray]:
    """Image id → (n^c,) 0/1 image labels over ``classes`` (``image_labels.json``)."""
    column = {c: k for k, c in enumerate(classes)}
    out = {}
    for image_id, cats in split.image_labels.items():
        v = np.zeros(len(classes), np.float32)
        v[[column[c] for c in cats if c in column]] = 1.0
        out[image_id] = v
    return out


def load_proposals(folder: Path, split: CanonicalSplit, max_proposals: int) -> dict[int, Any]:
    """Every image's proposals of ``split`` from a proposals run (checked by ``read_proposals``: a bad file
    stops with its path and the proposal at fault), the best ``max_proposals`` of each."""
    from datasets.proposals import read_proposals

    out = {}
    for image in split.images:
        path = folder / split.name / f"{image.stem}.npz"
        if not path.is_file():
            raise DatasetError("proposals file is missing (run `bench jtsm --variant proposals` first)", path=path,
                               record=f"image {image.id}")
        found = read_proposals(path, height=image.height, width=image.width)
        if found.image_id != image.id:
            raise DatasetError(f"holds the proposals of image {found.image_id}", path=path, record=f"image {image.id}")
        if len(found) == 0:
            raise DatasetError("holds no proposal", path=path, record=f"image {image.id}")
        sp, members, boxes, scores = found.as_arrays()
        out[image.id] = (sp, members[:max_proposals], boxes[:max_proposals], scores[:max_proposals])
    return out


def gt_segments(split: CanonicalSplit, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, H, W) bool ground-truth segments of an image (things and stuff) and (G,) whether each is a thing."""
    ids, segments = split.panoptic_map(image_id)
    by_id = split.dataset.category_by_id
    masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
    return masks, np.array([bool(by_id[s["category_id"]].isthing) for s in segments], bool)


def write_predictions(out: Path, val: CanonicalSplit, train: CanonicalSplit, predict: Any, val_props: dict[int, Any],
                      train_props: dict[int, Any], classes: list[int], panoptic: bool, desc: str) -> dict[str, int]:
    """``val_instances.json``, ``val_detections.json``, ``val_panoptic.json`` + PNGs (with ``panoptic``) and
    ``train_detections.json`` from ``predict(split, image, proposals, full)`` → ImagePrediction."""
    instances: list[dict] = []
    detections: list[dict] = []
    writer = P.PanopticWriter(out / P.PANOPTIC_DIR) if panoptic else None
    for image in tqdm(val.images, desc=f"{desc} val", unit="img", leave=False):
        pred = predict(val, image.id, val_props[image.id], True)
        cats = [classes[int(c)] for c in pred.det_classes]
        detections += P.detection_records(image.id, pred.boxes, cats, pred.det_scores)
        instances += P.instance_records(image.id, list(pred.masks), cats, pred.det_scores)
        if writer is not None:
            assert pred.panoptic is not None
            ids, segments = pred.panoptic
            writer.add(image, [(ids == s.id, classes[s.category]) for s in segments])
    train_records: list[dict] = []
    for image in tqdm(train.images, desc=f"{desc} train", unit="img", leave=False):
        pred = predict(train, image.id, train_props[image.id], False)
        train_records += P.detection_records(image.id, pred.boxes, [classes[int(c)] for c in pred.det_classes],
                                     pred.det_scores)
    write_json(out / P.INSTANCES, instances, indent=None)
    write_json(out / P.DETECTIONS, detections, indent=None)
    write_json(out / P.TRAIN_DETECTIONS, train_records, indent=None)
    if writer is not None:
        write_json(out / P.PANOPTIC_JSON, {"images": val.panoptic["images"], "annotations": writer.annotations(),
                                           "categories": val.dataset.meta["categories"]}, indent=None)
    return {"val_instances": len(instances), "val_detections": len(detections), "train_detections": len(train_records)}
