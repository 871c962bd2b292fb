"""PointsFile: rows of points.npy read as the array would give them, without loading the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcc.work.points_file import PointsFile


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[np.ndarray, Path]:
    points = np.random.default_rng(7).normal(size=(1001, 3))
    path = tmp_path / "points.npy"
    np.save(path, points)
    return points, path


def test_rows_and_slices_match_the_array(saved: tuple[np.ndarray, Path]) -> None:
    points, path = saved
    pf = PointsFile(path)
    assert len(pf) == 1001 and pf.shape == (1001, 3)
    np.testing.assert_array_equal(pf[0], points[0])
    np.testing.assert_array_equal(pf[-1], points[-1])
    np.testing.assert_array_equal(pf[10:250], points[10:250])
    np.testing.assert_array_equal(pf[990:5000], points[990:])  # clipped like an array's slice
    assert pf[5:5].shape == (0, 3)
    assert pf[3:4].tolist() == points[3:4].tolist()
    with pytest.raises(IndexError):
        pf[1001]
    with pytest.raises(IndexError):
        pf[::2]
    pf.close()


def test_a_forked_child_reads_through_the_same_descriptor(saved: tuple[np.ndarray, Path]) -> None:
    """The worker's compute child is a fork: pread needs no file offset of its own."""
    import os

    points, path = saved
    pf = PointsFile(path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read rows, report whether they match, exit without cleanup
        ok = np.array_equal(pf[100:200], points[100:200]) and np.array_equal(pf[7], points[7])
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    np.testing.assert_array_equal(pf[500:600], points[500:600])
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)


def test_truncated_and_fortran_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, np.asfortranarray(np.ones((4, 3))))
    with pytest.raises(ValueError, match="Fortran"):
        PointsFile(path)
    whole = tmp_path / "t.npy"
    np.save(whole, np.ones((100, 3)))
    pf = PointsFile(whole)
    with open(whole, "r+b") as fh:
        fh.truncate(whole.stat().st_size - 8 * 3 * 10)
    with pytest.raises(EOFError, match="truncated"):
        pf[95:100]
