"""Combining per-subproblem result files into one: the user's ``combine_data`` or the built-in one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
from h5py import h5d, h5f, h5p, h5s

BLOCK_BYTES = 4 * 2**20  # rows are gathered in a buffer of this size, then written in one call
SMALL_FILE_BYTES = 2**20  # files up to this size are read whole in one read (HDF5's core driver)


def builtin_combine(files: Sequence[str], fileout: str) -> None:
    """Concatenate the ``data`` datasets of ``files`` (in the given order) into ``fileout``.

    One pass, each file opened once: its rows are read (converted to float64 by HDF5) straight into
    a fixed-size block buffer, and a full block is appended to the output dataset in one write. The
    memory used is one block (or one file's rows, if a single file is larger), never the whole
    result; the output dataset grows as blocks arrive (chunked, resizable along the rows).
    """
    files = list(files)
    with h5py.File(fileout, "w") as out:
        if not files:
            out.create_dataset("data", (0, 0), dtype="float64")
            return
        small, large = _read_fapls()
        writer: _BlockWriter | None = None
        for name in files:
            fapl = small if os.stat(name).st_size <= SMALL_FILE_BYTES else large
            fid = h5f.open(os.fsencode(name), h5f.ACC_RDONLY, fapl=fapl)
            try:
                dset = h5d.open(fid, b"data")
                try:
                    shape = dset.shape
                    if len(shape) not in (1, 2):
                        raise ValueError(f"{name}: `data` has shape {shape}; the built-in combiner takes 1-D or 2-D "
                                         f"rows; write a combine_data.py")
                    width = shape[1] if len(shape) > 1 else 1
                    if width == 0:
                        raise ValueError(f"{name}: `data` rows have no columns (shape {shape})")
                    if writer is None:
                        writer = _BlockWriter(out, width)
                    elif width != writer.width:
                        raise ValueError(f"result files have different row widths {sorted({width, writer.width})}; "
                                         f"write a combine_data.py")
                    writer.read_from(dset, shape[0])
                finally:
                    dset.close()
            finally:
                fid.close()
        assert writer is not None
        writer.flush()


class _BlockWriter:
    """Appends rows to ``out["data"]`` (float64, ``width`` columns) through one reusable block buffer."""

    def __init__(self, out: h5py.File, width: int) -> None:
        self.width = width
        rows = max(1, BLOCK_BYTES // (8 * width))
        self.block = np.empty((rows, width), dtype=np.float64)
        self.used = 0
        chunk_rows = max(1, min(rows, 2**20 // (8 * width)))  # ~1 MiB chunks
        self.dset = out.create_dataset("data", (0, width), maxshape=(None, width), dtype="float64",
                                       chunks=(chunk_rows, width))
        self.total = 0

    def read_from(self, dset: h5d.DatasetID, rows: int) -> None:
        if rows == 0:
            return
        if rows > len(self.block):  # one file larger than the block: read it alone
            self.flush()
            own = np.empty((rows, self.width), dtype=np.float64)
            dset.read(h5s.ALL, h5s.ALL, own)
            self._append(own)
            return
        if self.used + rows > len(self.block):
            self.flush()
        dset.read(h5s.ALL, h5s.ALL, self.block[self.used : self.used + rows])
        self.used += rows

    def flush(self) -> None:
        if self.used:
            self._append(self.block[: self.used])
            self.used = 0

    def _append(self, rows: np.ndarray) -> None:
        start = self.total
        self.total += len(rows)
        self.dset.resize(self.total, axis=0)
        self.dset[start : self.total] = rows


def _read_fapls() -> tuple[h5p.PropFAID, h5p.PropFAID]:
    """File access for (small, large) files, read-only and without file locks (a result file is
    complete before it appears under its name); a small one is read whole in one read (core
    driver, nothing written back) instead of a handful of small reads."""
    small, large = h5p.create(h5p.FILE_ACCESS), h5p.create(h5p.FILE_ACCESS)
    small.set_fapl_core(64 * 1024, False)
    for fapl in (small, large):
        try:
            fapl.set_file_locking(False, True)
        except (AttributeError, RuntimeError):  # HDF5 < 1.12.1: locking stays as configured
            pass
    return small, large


def combine_files(files: Sequence[str], fileout: Path, combiner: Callable[[list[str], str], None] | None) -> None:
    """Run the combiner into a temporary file, then move it into place (never a half-written output)."""
    tmp = fileout.with_name(fileout.name + ".part")
    tmp.unlink(missing_ok=True)
    (combiner or builtin_combine)(list(files), str(tmp))
    if not tmp.exists():
        raise RuntimeError("combine_data(files, fileout) returned without writing fileout")
    tmp.replace(fileout)
