"""Combining per-subproblem result files into one: the user's ``combine_data`` or the built-in one."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np


def builtin_combine(files: Sequence[str], fileout: str) -> None:
    """Concatenate the ``data`` datasets of ``files`` (in the given order) into ``fileout``."""
    widths, total = set(), 0
    for name in files:
        with h5py.File(name, "r") as fh:
            shape = fh["data"].shape
            widths.add(shape[1] if len(shape) > 1 else 1)
            total += shape[0]
    if len(widths) > 1:
        raise ValueError(f"result files have different row widths {sorted(widths)}; write a combine_data.py")
    width = widths.pop() if widths else 0
    with h5py.File(fileout, "w") as out:
        dset = out.create_dataset("data", (total, width), dtype="float64")
        start = 0
        for name in files:
            with h5py.File(name, "r") as fh:
                block = np.asarray(fh["data"][...], dtype="float64").reshape(-1, width)
            dset[start : start + len(block)] = block
            start += len(block)


def combine_files(files: Sequence[str], fileout: Path, combiner: Callable[[list[str], str], None] | None) -> None:
    """Run the combiner into a temporary file, then move it into place (never a half-written output)."""
    tmp = fileout.with_name(fileout.name + ".part")
    tmp.unlink(missing_ok=True)
    (combiner or builtin_combine)(list(files), str(tmp))
    if not tmp.exists():
        raise RuntimeError("combine_data(files, fileout) returned without writing fileout")
    tmp.replace(fileout)
