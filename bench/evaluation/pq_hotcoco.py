"""The ``hotcoco`` PQ backend: ``hotcoco.panoptic.PanopticEval`` (Rust, multi-threaded) behind the
evaluator's contract.

The harness keeps what it owns: the prediction JSON is validated exactly as for the ``native``
backend (image ids, one annotation per image, every image predicted, segment ids, duplicates,
unknown categories, PNG paths inside their folder and present), then hotcoco reads the PNGs and
matches the segments. Its per-category ``(Σiou, tp, fp, fn)`` become the evaluator's statistics, so
PQ/SQ/RQ and the All/Things/Stuff averages are computed by the same code as ``native``
(``PanopticEvaluator._average``). The two agree to 1e-15 and exactly on tp/fp/fn
(tests/test_eval_pq_backends.py). hotcoco's errors (a PNG id absent from ``segments_info``, a
segment absent from its PNG, a PNG size mismatch) become :class:`EvaluationError` naming the file.

Not available from hotcoco, so not counted with this backend (a note says so): ``pq.fp_ignored``
(unmatched predictions ignored as mostly void/crowd) and ``pq.gt_png_ids_not_in_json``.
"""

from __future__ import annotations

from pathlib import Path

from bench.evaluation.base import EvaluationError
from bench.evaluation.gt import panoptic_png_path
from bench.evaluation.panoptic import PanopticEvaluator, register_pq_backend


def _png_folder(json_path: Path, anns: list[tuple[int, dict]], folder: Path | None) -> Path:
    """The one folder that holds every PNG of ``anns`` (``folder/<file_name>``), as hotcoco reads them;
    missing PNGs and file names leaving the folder are errors, as with the native backend."""
    root: Path | None = None
    for iid, ann in anns:
        name = ann.get("file_name")
        path = panoptic_png_path(json_path, name, record=f"image {iid}", folder=folder)
        if not path.is_file():
            raise EvaluationError(f"{path}: image {iid}: panoptic PNG is missing")
        base = Path(str(path)[:-len(name)]) if str(path).endswith(name) else None
        if root is None:
            root = base
        if base is None or base != root:
            raise EvaluationError(f"{json_path}: image {iid}: PNG {path} is not under {root}; the hotcoco PQ "
                                  f"backend needs one PNG folder (use backend 'native')")
    return root if root is not None else (folder or json_path.with_suffix(""))


@register_pq_backend("hotcoco")
def run_hotcoco(ev: PanopticEvaluator, jobs: list[tuple[int, dict]], predictions: Path, pred_json: dict,
                pred_folder: Path | None, workers: int | None) -> None:
    """Fill ``ev`` from hotcoco's PQ over ``jobs`` (``workers`` is the native backend's: unused)."""
    try:
        from hotcoco import panoptic
    except ImportError:
        raise EvaluationError("pq: backend 'hotcoco' needs the package 'hotcoco', which is not installed; "
                              "use backend 'native'") from None
    source = str(predictions)
    for iid, ann in jobs:  # the JSON-level checks of the native backend, on every image
        ev._gt_segments(iid)
        ev._pred_segments(ann.get("segments_info"), f"{source}: image {iid}")
    gt_folder = _png_folder(ev.gt_json_path, [(iid, ev._gt_ann[iid]) for iid, _ in jobs], ev.gt_folder)
    pred_folder = _png_folder(predictions, jobs, pred_folder)
    gt_dict = dict(ev.gt_json, annotations=[ev._gt_ann[iid] for iid, _ in jobs])
    pred_dict = {"images": ev.gt_json.get("images", []), "categories": ev.gt_json["categories"],
                 "annotations": [ann for _, ann in jobs]}
    try:
        hc = panoptic.PanopticEval(gt_dict, pred_dict, gt_folder=str(gt_folder), pred_folder=str(pred_folder))
        hc.evaluate()
        per_class = hc.results()["per_class"]
    except (ValueError, OSError, RuntimeError) as err:
        raise EvaluationError(f"{source}: {err}") from None
    for cat, r in per_class.items():
        if r["tp"] + r["fp"] + r["fn"] == 0:
            continue
        st = ev._stat(int(cat))
        st.iou, st.tp, st.fp, st.fn = float(r["iou"]), int(r["tp"]), int(r["fp"]), int(r["fn"])
    for iid, ann in jobs:
        gt_segs = ev._gt_segments(iid).values()
        n_crowd = sum(1 for s in gt_segs if int(s.get("iscrowd", 0)) == 1)
        ev._counts["pq.images"] += 1
        ev._counts["pq.pred_segments"] += len(ann.get("segments_info") or [])
        ev._counts["pq.gt_segments"] += len(gt_segs) - n_crowd
        ev._counts["pq.gt_crowd_segments"] += n_crowd
        ev._done.add(iid)
    ev._note("pq: backend hotcoco does not report pq.fp_ignored nor pq.gt_png_ids_not_in_json "
             "(backend 'native' counts them)")
