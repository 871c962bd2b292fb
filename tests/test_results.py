"""Result files rendered from a template are byte for byte what HDF5 writes."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mcc.remote.results import ResultWriter, hdf5_image
from mcc.remote.worker import _write_result


def test_rendered_files_equal_hdf5s_and_read_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    writer = ResultWriter(_write_result)
    cases = [(rng.random((1, 3)), 0, 1), (rng.random((1, 3)), 1, 1), (rng.random((1, 3)), 2**40 + 5, 1),
             (rng.random((4, 3)), 10, 4), (rng.random((4, 3)), 14, 2),  # two rows per point
             (rng.integers(-9, 9, (5,)).astype(np.int32), 20, 5), (rng.integers(-9, 9, (5,)).astype(np.int32), 25, 5),
             (rng.random((1, 3)), np.int64(77), np.int64(1)), (rng.random((0, 3)), 30, 0), (rng.random((0, 3)), 31, 0)]
    for k, (data, first, n) in enumerate(cases):
        got, want = tmp_path / f"{k}.h5", tmp_path / f"{k}.ref.h5"
        writer.write(got, data, first, n)
        _write_result(want, data, first, n)
        assert got.read_bytes() == want.read_bytes(), k
        with h5py.File(got, "r") as fh:
            assert np.array_equal(fh["data"][...], data)
            assert (fh.attrs["first_point"], fh.attrs["n_points"]) == (first, n)
    assert writer.rendered >= 4  # the second file of a shape on came from its template
    assert hdf5_image(cases[0][0], 0, 1)[0] == (tmp_path / "0.ref.h5").read_bytes()


def test_a_template_that_disagrees_with_hdf5_is_not_used(tmp_path: Path) -> None:
    calls = []

    def hdf5_write(path: Path, data: np.ndarray, first: int, n: int) -> None:
        calls.append(first)
        _write_result(path, data, first, n)
        with open(path, "ab") as fh:  # a writer whose files the template cannot reproduce
            fh.write(b"\\0")

    writer = ResultWriter(hdf5_write)
    for first in range(3):
        writer.write(tmp_path / f"{first}.h5", np.ones((2, 2)), first, 2)
    assert calls == [0, 1, 2] and writer.rendered == 0


def test_a_multi_megabyte_shape_gets_its_template(tmp_path: Path) -> None:
    """A chunk of big rows (here 10 MB) is learned like a small one: its files come from the template."""
    writer = ResultWriter(_write_result)
    rows = np.arange(300 * 4096, dtype=np.float64).reshape(300, 4096)
    for first in (0, 300, 600):
        writer.write(tmp_path / f"{first}.h5", rows + first, first, 300)
        _write_result(tmp_path / "ref.h5", rows + first, first, 300)
        assert (tmp_path / f"{first}.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    assert writer.rendered == 2


def test_a_byte_that_varies_with_the_values_keeps_the_shape_on_hdf5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If anything but the two attribute values differs between files of one shape (a checksum, say),
    the shape is written by HDF5 every time."""
    from mcc.remote import results

    def checksum(image: bytes, first: object) -> bytes:
        return image + bytes([int(first) % 251])  # type: ignore[call-overload]  # past HDF5's end of data

    real = results.hdf5_image
    monkeypatch.setattr(results, "hdf5_image", lambda data, first, n: (checksum(real(data, first, n)[0], first),
                                                                          real(data, first, n)[1]))

    def hdf5_write(path: Path, data: np.ndarray, first: int, n: int) -> None:
        path.write_bytes(results.hdf5_image(data, first, n)[0])

    writer = ResultWriter(hdf5_write)
    for first in range(3):
        writer.write(tmp_path / f"{first}.h5", np.full((2, 3), float(first)), first, 2)
        with h5py.File(tmp_path / f"{first}.h5", "r") as fh:
            assert fh.attrs["first_point"] == first and fh["data"][0, 0] == first
    assert writer.rendered == 0 and list(writer.templates.values()) == [None]


def test_merge_partial_puts_recovered_points_back_in_point_order(tmp_path: Path) -> None:
    from mcc.remote.results import merge_partial, write_partial

    # chunk of points 10..13; 11 and 13 failed; 10 returned two rows, 12 one
    write_partial(tmp_path / "p.h5", np.array([[10.0, 0], [10.0, 1], [12.0, 0]]), 10, 4, [11, 13], [2, 1])
    _write_result(tmp_path / "r11.h5", np.array([[11.0, 0], [11.0, 1], [11.0, 2]]), 11, 1)
    out = merge_partial(tmp_path / "p.h5", {11: tmp_path / "r11.h5"}, tmp_path / "m.h5")
    with h5py.File(out, "r") as fh:
        assert fh["data"][:, 0].tolist() == [10, 10, 11, 11, 11, 12]
        assert fh.attrs["missing_points"].tolist() == [13] and fh.attrs["row_counts"].tolist() == [2, 3, 1]
        assert (fh.attrs["first_point"], fh.attrs["n_points"]) == (10, 4)
    assert merge_partial(tmp_path / "p.h5", {}, tmp_path / "x.h5") == tmp_path / "p.h5"  # nothing recovered
    write_partial(tmp_path / "none.h5", None, 10, 4, [10, 11, 12, 13], [])
    assert merge_partial(tmp_path / "none.h5", {}, tmp_path / "y.h5") is None  # no rows at all
