"""Semantic Boundaries Dataset (Hariharan et al. 2011) — ``benchmark_RELEASE/dataset``.

``img/<stem>.jpg``, ``cls/<stem>.mat`` (``GTcls.Segmentation``: class index map, 0 background;
``GTcls.CategoriesPresent``), ``inst/<stem>.mat`` (``GTinst.Segmentation``: instance index map,
0 background; ``GTinst.Categories``: the class of instance ``i`` at row ``i-1``), ``train.txt``,
``val.txt``. SBD has no void label and no ``difficult`` flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from datasets.errors import DatasetError

__all__ = ["find_sbd_root", "read_sbd_struct", "read_sbd_instances"]


def find_sbd_root(root: str | Path) -> Path | None:
    """The SBD ``dataset`` folder at or under ``root`` (``.``, ``dataset``, ``benchmark_RELEASE/dataset``,
    each also under ``SBD/``)."""
    root = Path(root)
    bases = (root, root / "SBD")
    for cand in (c for b in bases for c in (b, b / "dataset", b / "benchmark_RELEASE" / "dataset")):
        if (cand / "inst").is_dir() and (cand / "cls").is_dir():
            return cand
    return None


def read_sbd_struct(path: Path, var: str, *, record: str | None = None) -> dict[str, np.ndarray]:
    """The fields of the MATLAB struct ``var`` (``GTcls`` / ``GTinst``) of an SBD ``.mat`` file."""
    if not path.is_file():
        raise DatasetError("annotation file is missing", path=path, record=record)
    try:
        mat = scipy.io.loadmat(str(path))
        struct = mat[var][0, 0]
        return {name: struct[name] for name in struct.dtype.names}
    except (KeyError, IndexError, TypeError) as e:
        raise DatasetError(f"no MATLAB struct {var!r} in the file", path=path, record=record) from e
    except Exception as e:  # truncated, not a MAT file, v7.3 (HDF5), zlib errors: all mean unreadable
        raise DatasetError(f"cannot read MAT file: {e}", path=path, record=record) from e


def read_sbd_instances(inst_mat: Path, cls_mat: Path, *, record: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(instance map uint8 (H, W), class map uint8 (H, W), category of instance i at i-1)``."""
    inst = read_sbd_struct(inst_mat, "GTinst", record=record)
    cls = read_sbd_struct(cls_mat, "GTcls", record=record)
    try:
        seg = np.asarray(inst["Segmentation"])
        cats = [int(c) for c in np.asarray(inst["Categories"]).ravel()]
        cmap = np.asarray(cls["Segmentation"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"malformed SBD struct: {e}", path=inst_mat, record=record) from e
    for arr, path in ((seg, inst_mat), (cmap, cls_mat)):
        if arr.ndim != 2 or arr.size == 0 or arr.min() < 0 or arr.max() > 255:
            raise DatasetError(f"Segmentation must be a 2-D map of values 0..255, got shape {arr.shape}",
                               path=path, record=record)
    if seg.shape != cmap.shape:
        raise DatasetError(f"instance map {seg.shape} and class map {cmap.shape} differ in size: "
                           "mask size different from image size", path=inst_mat, record=record)
    return seg.astype(np.uint8), cmap.astype(np.uint8), cats
