"""The built-in combiner: every row once, in order, from result files however they were written."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mcc.work import combine
from mcc.work.combine import builtin_combine, combine_files
from mcc.remote.worker import _write_result


def _read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as fh:
        return fh["data"][...]


def test_worker_files_many_alike_most_skip_the_hdf5_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    parts, files = [], []
    for i in range(300):  # first_point grows past one byte: positions that vary are learned
        rows = rng.random((7, 3))
        _write_result(tmp_path / f"{i:05d}.h5", rows, 7 * i * 40, 7)
        parts.append(rows)
        files.append(str(tmp_path / f"{i:05d}.h5"))
    opened: list[str] = []
    real_open = combine.h5f.open
    monkeypatch.setattr(combine.h5f, "open", lambda name, *a, **k: opened.append(name) or real_open(name, *a, **k))
    combine_files(files, tmp_path / "out.h5", None)
    assert np.array_equal(_read(tmp_path / "out.h5"), np.concatenate(parts))
    assert 1 <= len(opened) <= 8  # the rest were read from their bytes


def test_files_written_other_ways_go_through_hdf5(tmp_path: Path) -> None:
    """Same size and shape but chunked, compressed, int32, 1-D, big-endian or another row count:
    each is read correctly, converted to float64, in order."""
    rng = np.random.default_rng(2)
    parts, files = [], []

    def add(rows: np.ndarray, **kwargs: object) -> None:
        name = tmp_path / f"{len(files):03d}.h5"
        with h5py.File(name, "w") as fh:
            fh.create_dataset("data", data=rows, **kwargs)
            fh.attrs["first_point"] = len(files)
        parts.append(np.asarray(rows, dtype=np.float64).reshape(len(rows), -1))
        files.append(str(name))

    for k in range(4):
        add(rng.random((10, 2)))  # plain, contiguous: learned, then read from bytes
        add(rng.random((10, 2)), chunks=(5, 2))
        add(rng.random((10, 2)), compression="gzip")
        add(rng.random((10, 2)).astype(">f8"))
        add(rng.integers(0, 1000, (10, 2)).astype(np.int32))
        add(rng.random((3, 2)))
    _write_result(tmp_path / "w.h5", rng.random((10, 2)), 99, 10)
    files.append(str(tmp_path / "w.h5"))
    parts.append(_read(tmp_path / "w.h5"))
    builtin_combine(files, str(tmp_path / "out.h5"))
    assert np.array_equal(_read(tmp_path / "out.h5"), np.concatenate(parts))

    one_d = tmp_path / "one_d.h5"
    with h5py.File(one_d, "w") as fh:
        fh.create_dataset("data", data=np.arange(4.0))
    builtin_combine([str(one_d)] * 3, str(tmp_path / "out1.h5"))
    assert np.array_equal(_read(tmp_path / "out1.h5"), np.tile(np.arange(4.0), 3).reshape(-1, 1))


def test_larger_than_a_block_and_than_a_small_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(combine, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(combine, "SMALL_FILE_BYTES", 100_000)
    rng = np.random.default_rng(3)
    # 300 rows: more than a block; 2,100 rows: beyond the first read; 4,000: not a small file
    parts = [rng.random((n, 4)) for n in (30, 30, 30, 300, 300, 30, 2100, 2100, 30, 4000, 0, 30)]
    files = []
    for i, rows in enumerate(parts):
        _write_result(tmp_path / f"{i}.h5", rows, i, len(rows))
        files.append(str(tmp_path / f"{i}.h5"))
    builtin_combine(files, str(tmp_path / "out.h5"))
    assert np.array_equal(_read(tmp_path / "out.h5"), np.concatenate(parts))


def test_files_split_across_blocks_whatever_their_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1-D, int32, big-endian and float64 files (read by HDF5 or from their bytes), each larger than a
    block of 8 rows and ending mid-block: every row once, in order."""
    monkeypatch.setattr(combine, "BLOCK_BYTES", 64)
    rng = np.random.default_rng(6)
    parts, files = [], []
    for k, (dtype, n) in enumerate([("<f8", 13), ("<f8", 13), ("<i4", 14), ("<i4", 14), (">f8", 15), ("<f8", 17),
                                    ("<f8", 17)]):  # a file like the one before it is read from its bytes
        values = (rng.random(n) * 100).astype(dtype)
        name = tmp_path / f"{k}.h5"
        with h5py.File(name, "w") as fh:
            fh.create_dataset("data", data=values)
        parts.append(values.astype(np.float64).reshape(-1, 1))
        files.append(str(name))
    opened: list[str] = []
    real_open = combine.h5f.open
    monkeypatch.setattr(combine.h5f, "open", lambda name, *a, **k: opened.append(name) or real_open(name, *a, **k))
    builtin_combine(files, str(tmp_path / "out.h5"))
    assert len(opened) == 4  # 1, 3 and 6 were read from their bytes
    assert np.array_equal(_read(tmp_path / "out.h5"), np.concatenate(parts))
    with h5py.File(tmp_path / "out.h5", "r") as fh:
        assert fh["data"].chunks == (8, 1)


def test_different_widths_are_refused(tmp_path: Path) -> None:
    _write_result(tmp_path / "a.h5", np.zeros((2, 3)), 0, 2)
    _write_result(tmp_path / "b.h5", np.zeros((2, 4)), 2, 2)
    with pytest.raises(ValueError, match="different row widths"):
        builtin_combine([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], str(tmp_path / "out.h5"))


def test_point_index_numbers_every_row_and_small_results_are_stored_at_their_size(tmp_path: Path) -> None:
    """One row per point, k rows per point and an odd row count; a result within one block is contiguous."""
    shapes = [((3, 2), (0, 3)), ((4, 2), (10, 2)), ((5, 2), (20, 2))]  # rows, (first_point, n_points)
    files = []
    for k, ((rows, width), _) in enumerate(shapes):
        _write_result(tmp_path / f"{k}.h5", np.full((rows, width), float(k)), 0, rows)
        files.append(str(tmp_path / f"{k}.h5"))
    combine_files(files, tmp_path / "out.h5", None, chunks=[c for _, c in shapes])
    with h5py.File(tmp_path / "out.h5", "r") as fh:
        assert fh["point_index"][...].tolist() == [0, 1, 2, 10, 10, 11, 11, -1, -1, -1, -1, -1]
        assert fh["data"].shape == (12, 2) and fh["data"].chunks is None
    assert (tmp_path / "out.h5").stat().st_size < 8 * 1024  # not a 4 MiB block-sized chunk


def test_byte_runs_match_a_plain_loop() -> None:
    """The ranges of a layout's fixed bytes (vectorised) against the obvious loop."""
    rng = np.random.default_rng(5)
    for size in (0, 1, 2, 7, 100):
        where = rng.random(size) < 0.4
        loop, start = [], None
        for i in range(size + 1):
            if i < size and where[i]:
                start = i if start is None else start
            elif start is not None:
                loop.append((start, i))
                start = None
        assert combine._runs(where) == loop


def test_point_index_of_points_with_different_row_counts_comes_from_row_counts(tmp_path: Path) -> None:
    """An entry returning a variable number of rows per point: each file's ``row_counts`` numbers its rows,
    also when the total divides evenly (1 + 3 rows for 2 points is not 2 + 2), and files of the same size
    with other counts are never read through a layout learned from another."""
    from mcc.remote.results import add_row_counts

    counts = [[1, 3], [3, 1], [2, 2], [3, 1]]  # the last three files have the same size
    files = []
    for k, c in enumerate(counts):
        path = tmp_path / f"{k}.h5"
        rows = np.repeat(np.arange(10 * k, 10 * k + 2, dtype=float), c)
        _write_result(path, np.column_stack([rows, rows]), 10 * k, 2)
        add_row_counts(path, c)  # [2, 2] is uniform: no attribute, the even split is right
        files.append(str(path))
    combine_files(files, tmp_path / "out.h5", None, chunks=[(10 * k, 2) for k in range(len(counts))])
    with h5py.File(tmp_path / "out.h5", "r") as fh:
        np.testing.assert_array_equal(fh["point_index"][...], fh["data"][:, 0])
        assert fh["point_index"][...].tolist() == [0, 1, 1, 1, 10, 10, 10, 11, 20, 20, 21, 21, 30, 30, 30, 31]
