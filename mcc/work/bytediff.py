"""Comparing file images byte by byte, vectorised: what template learning (the workers' result
files, the combiner's layouts) needs to find the bytes that vary between two files of one layout.

A result file can be tens of MB; a Python loop over its bytes costs ~1 s per 10 MB, numpy ~1 ms.
"""
from __future__ import annotations

import numpy as np


def differs(a: bytes, b: bytes) -> np.ndarray:
    """Per byte position, whether ``a`` and ``b`` (of equal length) differ there (a bool array)."""
    if len(a) != len(b):
        raise ValueError(f"images of different sizes ({len(a)} and {len(b)} bytes)")
    return np.frombuffer(a, dtype=np.uint8) != np.frombuffer(b, dtype=np.uint8)


def mask(size: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """A bool array of ``size`` positions, True inside the ``[start, end)`` ranges of ``spans``."""
    out = np.zeros(size, dtype=bool)
    for start, end in spans:
        out[start:end] = True
    return out


def runs(where: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges where the bool array ``where`` is True, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], where.astype(np.int8), [0]))))
    return [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2])]
