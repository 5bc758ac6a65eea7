"""Panoptic quality (PQ / SQ / RQ; all, things, stuff) — panopticapi ``pq_compute`` semantics.

Reference: cocodataset/panopticapi ``panopticapi/evaluation.py`` (``pq_compute_single_core``,
``PQStat.pq_average``). Per image, with ``VOID = 0``:

- predicted segment areas are recomputed from the PNG; GT areas are the ``area`` of the GT JSON;
- a PNG id (other than 0) missing from the prediction JSON, a JSON segment absent from the PNG, and
  an unknown predicted ``category_id`` are errors naming the image and the segment;
- matching: for every (GT segment, predicted segment) pair that overlaps, skipping GT crowd
  segments and category mismatches, ``union = pred_area + gt_area − inter − |pred ∩ GT void|``;
  the pair is a TP when ``inter / union > 0.5`` (strict) — unique by construction;
- FN: every unmatched non-crowd GT segment of the JSON;
- crowd: ``crowd_labels_dict[category] = id`` of the GT crowd segment of that category (the last
  one in JSON order wins — panopticapi overwrites the dict entry);
- FP: an unmatched prediction, unless ``(|pred ∩ void| + |pred ∩ crowd segment of its
  category|) / pred_area > 0.5``, in which case it is ignored (counted in ``pq.fp_ignored``);
- averaging over the categories of the GT JSON with ``tp + fp + fn > 0``:
  ``pq = Σiou / (tp + fp/2 + fn/2)``, ``sq = Σiou / tp`` (0 if no tp), ``rq = tp / (tp + fp/2 + fn/2)``;
  All / Things (``isthing == 1``) / Stuff.

Backends (``backend``, from the ``eval.coco_backend`` switch; :data:`PQ_BACKENDS`):

- ``native`` — this module, per image in Python/NumPy, optionally over ``workers`` processes; checked
  against panopticapi itself (tests/test_eval_panoptic.py). Used for ``pycocotools`` and
  ``faster-coco-eval``, which have no PQ.
- ``hotcoco`` (the default) — ``hotcoco.panoptic.PanopticEval`` (Rust, its own threads) on the same
  validated JSONs; its per-category (Σiou, tp, fp, fn) go through the same averaging as ``native``
  (:mod:`bench.evaluation.pq_hotcoco`; tests/test_eval_pq_backends.py holds the two equal).

Implementation of ``native``: per image, the GT and predicted ids are mapped to compact indices (``searchsorted``
over the ids of the JSON) and one ``np.bincount`` over ``gt_index · n_pred + pred_index`` gives the
whole intersection table — the same numbers as panopticapi's ``np.unique`` over
``gt_id · 256³ + pred_id`` (a test checks both), without per-pixel Python. Per-category IoU sums
are accumulated in panopticapi's order (image order, then ascending (gt id, pred id)).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from bench.evaluation.base import EvaluationError, EvaluationResult, Evaluator, check_options, register_evaluator
from bench.evaluation.gt import CanonicalGT, panoptic_png_path, read_json

OFFSET = 256 * 256 * 256
VOID = 0
#: default ``workers`` of the native backend from POOL_MIN_IMAGES images on: 2, measured faster than 1 at
#: 5,000 images on the 2-core machines (docs/evaluation.md, "Benchmark")
DEFAULT_WORKERS = 2
#: below this many images the default is 1 process (the pool is not worth its start-up)
POOL_MIN_IMAGES = 64
#: COCO backend name (``eval.coco_backend``) → PQ backend; a library without PQ uses ``native``
PQ_BACKEND_OF = {"pycocotools": "native", "faster-coco-eval": "native", "hotcoco": "hotcoco", "native": "native"}
DEFAULT_PQ_BACKEND = "hotcoco"

#: name → ``run(evaluator, jobs, predictions, pred_json, pred_folder, workers)``: fills the evaluator's
#: state from the validated jobs ``[(image_id, prediction annotation)]`` (:func:`register_pq_backend`)
PQ_BACKENDS: dict[str, Callable[..., None]] = {}


def register_pq_backend(name: str):
    """Function decorator registering a PQ backend under ``name``."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        if name in PQ_BACKENDS:
            raise KeyError(f"a PQ backend named {name!r} is already registered")
        PQ_BACKENDS[name] = fn
        return fn

    return deco


def pq_backend(name: str) -> str:
    """The PQ backend used for ``name`` (a COCO backend name or a PQ backend name)."""
    try:
        return PQ_BACKEND_OF[name]
    except KeyError:
        raise EvaluationError(f"pq: unknown backend {name!r}; allowed: {sorted(PQ_BACKEND_OF)}") from None


def read_panoptic_ids(path: Path, *, record: str) -> np.ndarray:
    """COCO panoptic PNG → ids ``uint32 (H, W)`` = ``R + 256·G + 256²·B`` (panopticapi ``rgb2id``)."""
    if not path.is_file():
        raise EvaluationError(f"{path}: {record}: panoptic PNG is missing")
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise EvaluationError(f"{path}: {record}: PNG cannot be decoded")
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise EvaluationError(f"{path}: {record}: expected an 8-bit RGB panoptic PNG, got shape {arr.shape} "
                              f"dtype {arr.dtype}")
    # OpenCV decodes to BGR(A); as little-endian uint32, RGBA bytes read R + 256·G + 256²·B + 256³·A
    rgba = cv2.cvtColor(arr, cv2.COLOR_BGR2RGBA if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    ids = rgba.view("<u4")[..., 0]
    return ids & np.uint32(0xFFFFFF)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB array → ids, as panopticapi ``rgb2id``."""
    rgb = np.asarray(rgb).astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


_LUT: np.ndarray | None = None  # per-process id → index table (2^24 int16, 32 MiB), reset after each use


def _index_map(ids: np.ndarray, known: np.ndarray, void_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the position of its id in ``known`` (sorted, non-zero), ``void_index`` for id 0,
    and a mask of pixels whose id is neither (unknown)."""
    global _LUT
    flat = ids.ravel()
    if known.size < 32000 and (known.size == 0 or int(known[-1]) < OFFSET):
        if _LUT is None:
            _LUT = np.full(OFFSET, -1, np.int16)
        lut = _LUT
        lut[known] = np.arange(known.size, dtype=np.int16)
        lut[VOID] = void_index
        try:
            idx = lut[flat]
        finally:
            lut[known] = -1
            lut[VOID] = -1
        unknown = idx < 0
        return idx, unknown
    # many segments: binary search
    pos = np.searchsorted(known, flat)
    pos_c = np.minimum(pos, max(known.size - 1, 0))
    found = known[pos_c] == flat if known.size else np.zeros(flat.size, bool)
    idx = np.where(found, pos_c, np.where(flat == VOID, void_index, -1))
    return idx, idx < 0


def intersection_table(pan_gt: np.ndarray, pan_pred: np.ndarray, gt_ids: np.ndarray, pred_ids: np.ndarray, *,
                       where: str = "prediction") -> tuple[np.ndarray, int]:
    """Pixel counts of every (GT segment, predicted segment) pair of one image.

    ``gt_ids`` / ``pred_ids``: the sorted segment ids of the two JSONs. Returns ``table`` of shape
    ``(len(gt_ids) + 2, len(pred_ids) + 1)`` — row ``len(gt_ids)`` is GT VOID (id 0), the last row
    GT ids absent from the GT JSON (panopticapi skips them), the last column predicted VOID — and
    the number of such stray GT ids. A predicted PNG id (other than 0) that is not in ``pred_ids``
    is an error, as in panopticapi. Equal to panopticapi's ``np.unique(gt · 256³ + pred)`` counts.
    """
    n_g, n_p = gt_ids.size, pred_ids.size
    p_idx, p_unknown = _index_map(pan_pred, pred_ids, n_p)
    if p_unknown.any():
        bad = np.unique(pan_pred.ravel()[p_unknown])
        raise EvaluationError(f"{where}: segment with ID {int(bad[0])} is presented in PNG and not presented "
                              f"in JSON" + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""))
    g_idx, g_unknown = _index_map(pan_gt, gt_ids, n_g)
    stray = 0
    if g_unknown.any():
        stray = int(np.unique(pan_gt.ravel()[g_unknown]).size)
        g_idx = np.where(g_unknown, n_g + 1, g_idx)
    joint = g_idx.astype(np.intp)
    joint *= n_p + 1
    joint += p_idx
    table = np.bincount(joint, minlength=(n_g + 2) * (n_p + 1)).reshape(n_g + 2, n_p + 1)
    return table, stray


class _CatStat:
    __slots__ = ("iou", "tp", "fp", "fn")

    def __init__(self) -> None:
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0

    def __getstate__(self):
        return (self.iou, self.tp, self.fp, self.fn)

    def __setstate__(self, state):
        self.iou, self.tp, self.fp, self.fn = state


@register_evaluator("pq")
class PanopticEvaluator(Evaluator):
    """PQ/SQ/RQ with panopticapi semantics."""

    def __init__(self, gt: CanonicalGT, *, gt_json: dict | None = None, gt_folder: Path | None = None) -> None:
        super().__init__()
        self.gt = gt
        self.gt_json = gt_json if gt_json is not None else gt.panoptic
        self.gt_json_path = gt.panoptic_path
        self.gt_folder = gt_folder
        self.categories = {int(c["id"]): c for c in self.gt_json["categories"]}
        self._gt_ann: dict[int, dict] = {}
        for i, a in enumerate(self.gt_json["annotations"]):
            iid = a.get("image_id")
            if iid in self._gt_ann:
                raise EvaluationError(f"{self.gt_json_path}: annotations[{i}]: second annotation for image {iid}")
            self._gt_ann[iid] = a
        self._stats: dict[int, _CatStat] = {}
        self._done: set[int] = set()

    _transient = ("gt", "gt_json", "_gt_ann", "categories")

    def _signature(self) -> tuple:
        return (self.gt.fingerprint(), len(self.gt_json["annotations"]), tuple(sorted(self.categories)))

    def _stat(self, cat: int) -> _CatStat:
        s = self._stats.get(cat)
        if s is None:
            s = self._stats[cat] = _CatStat()
        return s

    def gt_png(self, image_id: int) -> np.ndarray:
        ann = self._gt_ann[image_id]
        path = panoptic_png_path(self.gt_json_path, ann.get("file_name"), record=f"image {image_id}",
                                 folder=self.gt_folder)
        return read_panoptic_ids(path, record=f"image {image_id}")

    def process(self, image_id: int, pan_pred: np.ndarray, segments_info: list[dict], *,
                source: str = "predictions") -> None:
        """One image: predicted ids ``(H, W)`` (or RGB ``(H, W, 3)``) and its ``segments_info``."""
        image_id = int(image_id)
        where = f"{source}: image {image_id}"
        if image_id not in self._gt_ann:
            raise EvaluationError(f"{where}: image_id is not an image of {self.gt_json_path}")
        if image_id in self._done:
            raise EvaluationError(f"{where}: image processed twice")
        pan_pred = np.asarray(pan_pred)
        if pan_pred.ndim == 3:
            pan_pred = rgb_to_ids(pan_pred)
        pan_gt = self.gt_png(image_id)
        if pan_pred.shape != pan_gt.shape:
            raise EvaluationError(f"{where}: predicted PNG is {pan_pred.shape[1]}x{pan_pred.shape[0]} (WxH), "
                                  f"ground truth is {pan_gt.shape[1]}x{pan_gt.shape[0]}")
        gt_segs = self._gt_segments(image_id)
        pred_segs = self._pred_segments(segments_info, where)
        self._accumulate_image(image_id, pan_gt, pan_pred, gt_segs, pred_segs, where)
        self._done.add(image_id)

    def _gt_segments(self, image_id: int) -> dict[int, dict]:
        out: dict[int, dict] = {}
        for s in self._gt_ann[image_id].get("segments_info", []):
            sid = s.get("id")
            if not isinstance(sid, int) or sid <= 0 or sid in out:
                raise EvaluationError(f"{self.gt_json_path}: image {image_id}: invalid or duplicate GT segment id "
                                      f"{sid!r}")
            out[sid] = s
        return out

    def _pred_segments(self, segments_info: Any, where: str) -> dict[int, dict]:
        if not isinstance(segments_info, list):
            raise EvaluationError(f"{where}: segments_info must be a list")
        out: dict[int, dict] = {}
        for k, s in enumerate(segments_info):
            if not isinstance(s, dict) or not isinstance(s.get("id"), int) or isinstance(s.get("id"), bool):
                raise EvaluationError(f"{where}: segments_info[{k}]: missing or non-integer 'id'")
            sid = s["id"]
            if sid == VOID:
                raise EvaluationError(f"{where}: segments_info[{k}]: segment id 0 is VOID in the PNG")
            if sid in out:
                raise EvaluationError(f"{where}: segments_info[{k}]: duplicate segment id {sid}")
            if s.get("category_id") not in self.categories:
                raise EvaluationError(f"{where}: segment with ID {sid} has unknown category_id "
                                      f"{s.get('category_id')!r}")
            out[sid] = s
        return out

    def _accumulate_image(self, image_id: int, pan_gt: np.ndarray, pan_pred: np.ndarray,
                          gt_segs: dict[int, dict], pred_segs: dict[int, dict], where: str) -> None:
        gt_ids = np.array(sorted(gt_segs), dtype=np.uint32)
        pred_ids = np.array(sorted(pred_segs), dtype=np.uint32)
        n_g, n_p = gt_ids.size, pred_ids.size
        inter, stray = intersection_table(pan_gt, pan_pred, gt_ids, pred_ids, where=where)
        if stray:
            self._counts["pq.gt_png_ids_not_in_json"] += stray
        pred_area = inter.sum(axis=0)[:n_p]
        missing = [int(pred_ids[j]) for j in np.flatnonzero(pred_area == 0)]
        if missing:
            raise EvaluationError(f"{where}: the following segment IDs {missing} are presented in JSON and not "
                                  f"presented in PNG")
        void_inter = inter[n_g, :n_p]
        gt_info = [gt_segs[int(i)] for i in gt_ids]
        pred_info = [pred_segs[int(i)] for i in pred_ids]
        gt_cat = np.array([int(s["category_id"]) for s in gt_info], dtype=np.int64)
        gt_crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in gt_info], dtype=bool)
        gt_area = np.array([s["area"] for s in gt_info], dtype=np.float64 if any(
            isinstance(s["area"], float) for s in gt_info) else np.int64)
        pred_cat = np.array([int(s["category_id"]) for s in pred_info], dtype=np.int64)

        # matches (pairs in ascending (gt id, pred id) order, as panopticapi's np.unique)
        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        if n_g and n_p:
            it = inter[:n_g, :n_p]
            cand = (it > 0) & (~gt_crowd)[:, None] & (gt_cat[:, None] == pred_cat[None, :])
            gi, pj = np.nonzero(cand)
            if gi.size:
                i_ = it[gi, pj]
                union = pred_area[pj] + gt_area[gi] - i_ - void_inter[pj]
                iou = i_ / union
                for g, p, v in zip(gi[iou > 0.5], pj[iou > 0.5], iou[iou > 0.5]):
                    st = self._stat(int(gt_cat[g]))
                    st.tp += 1
                    st.iou += float(v)
                    gt_matched.add(int(g))
                    pred_matched.add(int(p))
        # false negatives; crowd regions by category (JSON order, last wins)
        crowd_by_cat: dict[int, int] = {}
        order_in_json = {int(s["id"]): k for k, s in enumerate(self._gt_ann[image_id].get("segments_info", []))}
        for g in sorted(range(n_g), key=lambda g: order_in_json[int(gt_ids[g])]):
            if g in gt_matched:
                continue
            if gt_crowd[g]:
                crowd_by_cat[int(gt_cat[g])] = g
                continue
            self._stat(int(gt_cat[g])).fn += 1
        # false positives, unless mostly on void / a crowd region of their category
        for p in range(n_p):
            if p in pred_matched:
                continue
            covered = int(void_inter[p])
            c = int(pred_cat[p])
            if c in crowd_by_cat:
                covered += int(inter[crowd_by_cat[c], p])
            if covered / pred_area[p] > 0.5:
                self._counts["pq.fp_ignored"] += 1
                continue
            self._stat(c).fp += 1
        self._counts["pq.images"] += 1
        self._counts["pq.pred_segments"] += n_p
        self._counts["pq.gt_segments"] += int((~gt_crowd).sum())
        self._counts["pq.gt_crowd_segments"] += int(gt_crowd.sum())

    def _merge_state(self, other: "PanopticEvaluator") -> None:
        dup = self._done & other._done
        if dup:
            raise EvaluationError(f"pq: cannot merge, images processed in both: {sorted(dup)[:10]}")
        for cat, s in other._stats.items():
            t = self._stat(cat)
            t.iou += s.iou
            t.tp += s.tp
            t.fp += s.fp
            t.fn += s.fn
        self._done |= other._done

    def _average(self, isthing: bool | None) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        pq = sq = rq = 0.0
        n = 0
        per: dict[int, dict[str, float]] = {}
        for label, info in self.categories.items():
            if isthing is not None and (info.get("isthing") == 1) != isthing:
                continue
            s = self._stats.get(label, _CatStat())
            if s.tp + s.fp + s.fn == 0:
                per[label] = {"pq": float("nan"), "sq": float("nan"), "rq": float("nan")}
                continue
            n += 1
            pq_c = s.iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            sq_c = s.iou / s.tp if s.tp != 0 else 0
            rq_c = s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            per[label] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per

    def summarize(self) -> dict[str, float]:
        missing = [i for i in self._gt_ann if i not in self._done]
        if missing:
            raise EvaluationError(f"pq: no prediction for the image with id: {missing[0]}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        out: dict[str, float] = {}
        for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
            res, per = self._average(isthing)
            self._counts[f"pq.categories{suffix or '_all'}"] = int(res["n"])
            if res["n"] == 0:
                self._note(f"pq{suffix}: no category with tp+fp+fn > 0 (panopticapi would divide by zero): NaN")
            for m in ("PQ", "SQ", "RQ"):
                out[f"pq.{m}{suffix}"] = float(res[m.lower()]) * 100
            if isthing is None:
                self._per_class = {f"pq.{m}": {self.gt.category_name(c): float(v[m.lower()]) * 100
                                               for c, v in per.items()} for m in ("PQ", "SQ", "RQ")}
        return out

    def per_class(self) -> dict[str, dict[str, float]]:
        if not hasattr(self, "_per_class"):
            self.summarize()
        return self._per_class

    def stats(self) -> dict[int, tuple[float, int, int, int]]:
        """Category id → (Σiou, tp, fp, fn), for inspection and tests."""
        return {c: (s.iou, s.tp, s.fp, s.fn) for c, s in sorted(self._stats.items())}

    @classmethod
    def evaluate_files(cls, *, gt_root: Path, split: str, predictions: Path, **options: Any) -> EvaluationResult:
        """``predictions``: a COCO panoptic JSON; PNGs in ``pred_folder`` (default: the JSON path
        without ``.json``, panopticapi's convention). ``backend``: see the module docstring (default
        ``hotcoco``). ``workers``: processes of the ``native`` backend (default
        :data:`DEFAULT_WORKERS` from :data:`POOL_MIN_IMAGES` images on, else 1; more than 1 only where the
        platform can fork)."""
        check_options("pq", options, {"pred_folder", "workers", "backend"})
        backend = pq_backend(options.get("backend", DEFAULT_PQ_BACKEND))
        gt = CanonicalGT.load(gt_root, split)
        predictions = Path(predictions)
        pred_json = read_json(predictions, "panoptic predictions JSON")
        if not isinstance(pred_json, dict) or not isinstance(pred_json.get("annotations"), list):
            raise EvaluationError(f"{predictions}: not a COCO panoptic JSON (no 'annotations' list)")
        pred_folder = options.get("pred_folder")
        pred_folder = Path(pred_folder) if pred_folder is not None else None
        ev = cls(gt)
        pred_by_image: dict[int, dict] = {}
        for k, a in enumerate(pred_json["annotations"]):
            iid = a.get("image_id") if isinstance(a, dict) else None
            if not isinstance(iid, int) or isinstance(iid, bool):
                raise EvaluationError(f"{predictions}: annotations[{k}]: missing or non-integer 'image_id'")
            if iid not in ev._gt_ann:
                raise EvaluationError(f"{predictions}: annotations[{k}]: image_id {iid} is not an image of "
                                      f"{ev.gt_json_path}")
            if iid in pred_by_image:
                raise EvaluationError(f"{predictions}: annotations[{k}]: second annotation for image {iid}")
            pred_by_image[iid] = a
        image_ids = list(ev._gt_ann)
        for iid in image_ids:
            if iid not in pred_by_image:
                raise EvaluationError(f"{predictions}: no prediction for the image with id: {iid}")
        jobs = [(iid, pred_by_image[iid]) for iid in image_ids]
        PQ_BACKENDS[backend](ev, jobs, predictions, pred_json, pred_folder, options.get("workers"))
        return ev.result()


@register_pq_backend("native")
def _run_native(ev: PanopticEvaluator, jobs: list[tuple[int, dict]], predictions: Path, pred_json: dict,
                pred_folder: Path | None, workers: int | None) -> None:
    if workers is None:
        workers = DEFAULT_WORKERS if len(jobs) >= POOL_MIN_IMAGES else 1
    workers = max(1, min(int(workers), len(jobs) or 1))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        global _WORKER_STATE
        _WORKER_STATE = (ev.gt, predictions, pred_folder)
        try:
            # contiguous chunks merged in order, as panopticapi's np.array_split over its cores
            chunks = [[jobs[i] for i in part] for part in np.array_split(np.arange(len(jobs)), workers)]
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_run_chunk, chunks)
        finally:
            _WORKER_STATE = None
        for part in parts:
            ev.merge(part)
    else:
        _process_jobs(ev, jobs, predictions, pred_folder)


_WORKER_STATE: tuple | None = None


def _process_jobs(ev: PanopticEvaluator, jobs: list[tuple[int, dict]], predictions: Path,
                  pred_folder: Path | None) -> None:
    for iid, ann in jobs:
        png = panoptic_png_path(predictions, ann.get("file_name"), record=f"image {iid}", folder=pred_folder)
        ev.process(iid, read_panoptic_ids(png, record=f"image {iid}"), ann.get("segments_info"),
                   source=str(predictions))


def _run_chunk(jobs: list[tuple[int, dict]]) -> "PanopticEvaluator":
    gt, predictions, pred_folder = _WORKER_STATE  # type: ignore[misc]
    ev = PanopticEvaluator(gt)
    _process_jobs(ev, jobs, predictions, pred_folder)
    return ev
