"""A run's ``points.npy`` read a few rows at a time: what a worker holds is the points it computes.

Loading the file whole gives every worker a private copy of every point (24 MB at a million 3-D points);
a memory map would not copy, but each page a worker reads stays counted in its resident memory until it
exits. ``PointsFile`` reads the rows asked for with ``pread`` on one descriptor (a forked compute child
shares it: ``pread`` moves no file offset), so a worker's memory does not grow with the sweep.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


class PointsFile:
    """Rows of an ``.npy`` file of a C-ordered numeric array, indexed like the array: ``pf[i]`` (one row),
    ``pf[a:b]`` (rows a..b-1, step 1)."""

    def __init__(self, path: str | Path) -> None:
        header = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: nothing is read
        if header.ndim > 1 and not header.flags.c_contiguous:
            raise ValueError(f"{path} holds a Fortran-ordered array; points files are written in C order")
        self.path, self.shape, self.dtype, self.offset = Path(path), header.shape, header.dtype, header.offset
        del header
        self.row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        self.fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("PointsFile slices take step 1 only")
            return self._rows(start, max(0, stop - start))
        index = range(len(self))[key]  # IndexError out of range, negative from the end
        return self._rows(index, 1)[0]

    def _rows(self, first: int, n: int) -> np.ndarray:
        size, at = n * self.row_bytes, self.offset + first * self.row_bytes
        buf = bytearray(size)
        view, done = memoryview(buf), 0
        while done < size:
            got = os.preadv(self.fd, [view[done:]], at + done)
            if got == 0:
                raise EOFError(f"{self.path} ends before row {first + n} (it was truncated)")
            done += got
        return np.frombuffer(buf, dtype=self.dtype).reshape((n,) + self.shape[1:])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
