"""Batch result objects (mcc.work.pack): what a worker writes, what the manager and combiner read back."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from mcc.remote.results import ResultWriter
from mcc.remote.worker import _write_result
from mcc.work import pack
from mcc.work.combine import builtin_combine, combine_files


def _object(tmp: Path, name: str, rows: dict[int, np.ndarray], junk: bytes = b"") -> Path:
    """An object as the compute child and the worker write it: members appended (rendered from the
    template after the first), maybe junk a killed child left between them, then the seal."""
    path = tmp / name
    writer = ResultWriter(_write_result)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        placed = []
        for sub, data in rows.items():
            os.write(fd, junk)
            placed.append((sub, None, *writer.append(fd, data, sub * len(data), len(data), lambda: tmp / "scratch")))
        pack.seal(fd, placed)
    finally:
        os.close(fd)
    assert writer.rendered == len(rows) - 1  # the first through HDF5, the others from its template
    return path


def test_members_are_result_files_that_hdf5_reads_junk_between_them_ignored(tmp_path: Path) -> None:
    rows = {s: np.arange(12.0).reshape(4, 3) + 100 * s for s in (3, 1, 2)}
    path = _object(tmp_path, "a.pack", rows, junk=b"half a member")
    members = pack.members(path)
    assert [(m.sub, m.missing) for m in members] == [(3, None), (1, None), (2, None)]
    for m in members:
        one = tmp_path / f"m{m.sub}.h5"
        one.write_bytes(m.read())
        with h5py.File(one, "r") as fh:
            np.testing.assert_array_equal(fh["data"][...], rows[m.sub])
            assert int(fh.attrs["first_point"]) == m.sub * 4


def test_the_combiner_reads_members_in_the_order_given(tmp_path: Path) -> None:
    rows = {s: np.full((2, 2), float(s)) for s in range(5)}
    a = _object(tmp_path, "a.pack", {s: rows[s] for s in (0, 3)})
    b = _object(tmp_path, "b.pack", {s: rows[s] for s in (1, 2, 4)})
    members = sorted(pack.members(a) + pack.members(b), key=lambda m: m.sub)
    builtin_combine(members, str(tmp_path / "out.h5"), chunks=[(2 * s, 2) for s in range(5)])
    with h5py.File(tmp_path / "out.h5", "r") as fh:
        np.testing.assert_array_equal(fh["data"][:, 0], np.repeat(np.arange(5.0), 2))
        np.testing.assert_array_equal(fh["point_index"][...], np.arange(10))


def test_a_member_larger_than_a_small_file_is_read_in_place(tmp_path: Path) -> None:
    big = np.random.default_rng(0).random((30_000, 8))  # 1.9 MB: past SMALL_FILE_BYTES, through HDF5
    path = _object(tmp_path, "big.pack", {0: big, 1: big + 1})
    combine_files(pack.members(path), tmp_path / "out.h5", None)
    with h5py.File(tmp_path / "out.h5", "r") as fh:
        np.testing.assert_array_equal(fh["data"][...], np.vstack([big, big + 1]))


def test_an_object_without_its_seal_is_refused_not_misread(tmp_path: Path) -> None:
    path = _object(tmp_path, "a.pack", {0: np.ones((3, 3))})
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])  # cut short (a copy that never finished)
    with pytest.raises(ValueError, match="not a sealed batch object"):
        pack.members(path)
    path.write_bytes(b"xy")
    with pytest.raises(ValueError, match="too short"):
        pack.members(path)


def test_copy_sealed_keeps_only_the_members_named(tmp_path: Path) -> None:
    """A slow batch's acks go out before the batch ends: its members so far, copied into an object of their own."""
    src = tmp_path / "filling.part"
    writer = ResultWriter(_write_result)
    fd = os.open(src, os.O_WRONLY | os.O_CREAT, 0o644)
    placed = [(s, None if s != 1 else (5,), *writer.append(fd, np.full((2, 2), float(s)), 2 * s, 2, lambda: tmp_path / "x"))
              for s in range(3)]
    os.close(fd)
    pack.copy_sealed(src, placed[1:], tmp_path / "copy.pack")
    got = pack.members(tmp_path / "copy.pack")
    assert [(m.sub, m.missing) for m in got] == [(1, (5,)), (2, None)]
    assert [m.read() for m in got] == [src.read_bytes()[at : at + n] for _, _, at, n in placed[1:]]


def test_keys_name_worker_process_and_batch_and_sort_in_batch_order() -> None:
    keys = [pack.pack_key("i-0abc#1", "f00d", seq) for seq in (0, 9, 10, 123456)]
    assert keys == sorted(keys) and all(pack.is_pack_key(k) for k in keys)
    assert keys[0] == "results/i-0abc#1-f00d-000000.pack"
    assert pack.pack_key("a/b", "t", 0) == "results/a_b-t-000000.pack"  # never a folder of its own
