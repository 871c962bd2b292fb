"""The self-describing result file: what a script reading ``combined.h5`` alone can learn from it.

The built-in combiner writes ``data`` and ``point_index`` (see :func:`mcc.work.combine.builtin_combine`).
When a run is collected, :func:`describe` adds to the file — the built-in's or a user's
``combine_data`` output, when that is HDF5 —

- attributes: ``run_id``, ``mcc_version``, ``entry``, ``entry_sha256``, ``settings`` (JSON of the
  settings that change results), ``points_sha256``, ``n_points``, ``created_utc``, ``columns`` (when
  the project names them), ``missing_points`` (how many points have no result) and ``complete``;
- a ``missing`` dataset: one record ``(point_index, error)`` per point without a result (empty when
  none); left out of a user's file that already has a ``missing`` object of its own.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mcc import __version__

#: settings that can change what the file holds (the rest only change how fast it is made)
RESULT_SETTINGS = ("entry", "point_timeout", "max_attempts", "backend")
RESULT_AWS_SETTINGS = ("worker_type", "requirements", "custom_image", "image")


def points_sha256(points: np.ndarray) -> str:
    """SHA-256 of the points as float64, C order, with their shape: equal points, equal hash."""
    array = np.ascontiguousarray(points, dtype=np.float64)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(memoryview(array).cast("B"))  # the array's own buffer: no copy of a million points
    return digest.hexdigest()


def result_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of a run's settings (``Settings.to_dict()``) that changes results."""
    chosen = {k: settings.get(k) for k in RESULT_SETTINGS}  # None said too: point_timeout None = no limit
    aws = {k: v for k, v in (settings.get("aws") or {}).items() if k in RESULT_AWS_SETTINGS}
    if aws and settings.get("backend") == "aws":
        chosen["aws"] = aws
    return chosen


def file_attrs(run_id: str, spec: Mapping[str, Any], settings: Mapping[str, Any], n_points: int) -> dict[str, Any]:
    """The attributes :func:`describe` writes, from the run's ledger row (``Run.spec`` and ``Run.settings``)."""
    attrs: dict[str, Any] = {
        "run_id": run_id, "mcc_version": __version__,
        "entry": f"{spec.get('entry_kind')} {spec.get('entry_target')}",
        "entry_sha256": spec.get("entry_sha256", ""),
        "settings": json.dumps(result_settings(settings), sort_keys=True),
        "points_sha256": spec.get("points_sha256", ""), "n_points": int(n_points),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if spec.get("columns"):
        attrs["columns"] = list(spec["columns"])
    return attrs


def is_hdf5(path: Path) -> bool:
    import h5py  # here, not at the top: `mcc run` holds the points before it needs h5py (12 MB resident)

    return h5py.is_hdf5(str(path))


def describe(path: Path, attrs: Mapping[str, Any], missing: Mapping[int, str]) -> bool:
    """Add ``attrs``, ``missing_points``/``complete`` and the ``missing`` dataset to the HDF5 file at ``path``.

    Returns False (nothing written) when the file is not HDF5 (a user's combine_data may write anything).
    """
    if not is_hdf5(path):
        return False
    import h5py

    with h5py.File(path, "a") as fh:
        for key, value in attrs.items():
            fh.attrs[key] = np.array(value, dtype=h5py.string_dtype()) if isinstance(value, list) else value
        fh.attrs["missing_points"] = len(missing)
        fh.attrs["complete"] = not missing
        if "missing" in fh and not fh["missing"].attrs.get("mcc_missing"):
            return True  # the user's own object: leave it
        if "missing" in fh:
            del fh["missing"]
        kind = np.dtype([("point_index", np.int64), ("error", h5py.string_dtype())])
        table = np.array(sorted(missing.items()), dtype=kind) if missing else np.zeros(0, dtype=kind)
        dset = fh.create_dataset("missing", data=table)
        dset.attrs["mcc_missing"] = True
        dset.attrs["description"] = "points without a result: their index into get_points() and last error"
    return True
