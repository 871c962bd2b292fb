"""The per-point functions of the baselines (importable by Pool and RQ workers), identical to the
entries the mcc projects of the benchmarks use (``harness.NOOP_ENTRY`` / ``SPIN_ENTRY`` / ``BIG_ROWS_ENTRY``)."""
from __future__ import annotations

import time

import numpy as np


def noop(point: list[float]) -> list[float]:
    return point


def noop_batch(points: list[list[float]]) -> list[list[float]]:
    """``noop`` over a chunk of points: one task per chunk, as a dask or Pool user chunks by hand."""
    return [noop(p) for p in points]


def spin(point: list[float], seconds: float = 0.02) -> list[float]:
    """``seconds`` of CPU time in this thread (busy loop), then the point back."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return point


def spin_20ms(point: list[float]) -> list[float]:
    return spin(point, 0.02)


def big_rows(point: list[float]) -> np.ndarray:
    """A 5 × 4096 float64 block per point (160 KB), every value the point's number."""
    return np.full((5, 4096), point[0])


def points(n: int, dims: int = 3) -> np.ndarray:
    """``n`` distinct points: [i, i/2, 0, ...]."""
    i = np.arange(n, dtype=np.float64)
    cols = [i, i * 0.5] + [np.zeros(n)] * max(0, dims - 2)
    return np.column_stack(cols[:dims])
