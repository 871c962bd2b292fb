"""Result files written from a template: byte for byte what HDF5 writes, at the cost of one file write.

A worker writes one result file per subproblem (``data`` plus the attributes ``first_point`` and
``n_points``; see ``remote.worker._write_result``). HDF5 spends most of a small file's cost in its
own bookkeeping, and every file of one shape and dtype differs from the others only in its rows and
the two attribute values. So, per (shape, dtype), :class:`ResultWriter` has HDF5 build the file in
memory twice with different attribute values, learns where the rows and the two values are, and
from then on copies those bytes with the new rows and values patched in. The first real file of a
shape is written by HDF5 itself and compared with the rendering: only if they are identical does
the shape use the template; anything unexpected (a checksum, values found twice, an unallocated
dataset) leaves that shape on HDF5's path.

A subproblem some of whose points failed has a partial result instead (:func:`write_partial`: the
rows of its other points, which points are missing and how many rows each present point has),
merged with the rows of its points computed alone since by :func:`merge_partial` at combine time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5p, h5s, h5t

from mcc.project.folder import rows_from_result
from mcc.work.bytediff import differs, mask

_PROBES = ((0x0102030405060708, 0x1112131415161718), (0x2122232425262728, 0x3132333435363738))


def hdf5_image(data: np.ndarray, first: Any, n: Any) -> tuple[bytes, int | None]:
    """The result file HDF5 writes for these rows and attributes, built in memory; and the rows' offset."""
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_EARLIEST, h5f.LIBVER_LATEST)
    fapl.set_fapl_core(data.nbytes + 64 * 1024, False)  # in memory only, grown once: nothing touches the disk
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fid = h5f.create(b"mcc-result-image.h5", h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    try:
        offset = fill_result(fid, data, first, n)
        h5f.flush(fid)
        return fid.get_file_image(), offset
    finally:
        fid.close()


def fill_result(fid: h5f.FileID, data: np.ndarray, first: Any, n: Any) -> int | None:
    """Dataset and attributes exactly as ``remote.worker._write_result`` creates them."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    dset = h5d.create(fid, b"data", h5t.py_create(data.dtype, logical=True), h5s.create_simple(data.shape), dcpl=dcpl)
    try:
        dset.write(h5s.ALL, h5s.ALL, data)
        offset = dset.get_offset()
    finally:
        dset.close()
    for name, value in ((b"first_point", first), (b"n_points", n)):
        scalar = np.asarray(value)
        attr = h5a.create(fid, name, h5t.py_create(scalar.dtype, logical=True), h5s.create(h5s.SCALAR))
        attr.write(scalar)
        attr.close()
    return offset


class _Template:
    def __init__(self, image: bytes, data_at: int, nbytes: int, first_at: int, n_at: int) -> None:
        self.image, self.data_at, self.nbytes, self.first_at, self.n_at = image, data_at, nbytes, first_at, n_at

    def render(self, data: np.ndarray, first: Any, n: Any) -> bytes:
        out = bytearray(self.image)
        out[self.data_at : self.data_at + self.nbytes] = np.ascontiguousarray(data).tobytes()
        first_b, n_b = np.asarray(first).tobytes(), np.asarray(n).tobytes()
        out[self.first_at : self.first_at + len(first_b)] = first_b
        out[self.n_at : self.n_at + len(n_b)] = n_b
        return bytes(out)


def _learn(data: np.ndarray, first: Any, n: Any) -> _Template | None:
    """The template for files like this one, or None if its layout is not the simple one expected."""
    first_t, n_t = np.asarray(first).dtype, np.asarray(n).dtype
    if data.nbytes == 0 or first_t.itemsize != 8 or n_t.itemsize != 8:
        return None
    zeros = np.zeros_like(data)
    images = []
    for p_first, p_n in _PROBES:
        image, offset = hdf5_image(zeros, np.array(p_first, dtype=first_t), np.array(p_n, dtype=n_t))
        if offset is None:
            return None
        images.append((image, offset, np.array(p_first, dtype=first_t).tobytes(), np.array(p_n, dtype=n_t).tobytes()))
    (a, off_a, fa, na), (b, off_b, fb, nb) = images
    if len(a) != len(b) or off_a != off_b or off_a + data.nbytes > len(a):
        return None
    at = {}
    for name, va, vb in (("first", fa, fb), ("n", na, nb)):
        k = a.find(va)
        if k < 0 or a.find(va, k + 1) >= 0 or b[k : k + len(vb)] != vb:
            return None
        at[name] = k
    values = mask(len(a), [(at["first"], at["first"] + 8), (at["n"], at["n"] + 8)])
    if (differs(a, b) & ~values).any():
        return None  # something else changed with the values (a checksum?): stay with HDF5
    return _Template(a, off_a, data.nbytes, at["first"], at["n"])


class ResultWriter:
    """Writes result files through ``hdf5_write`` (the HDF5 path) until a shape's template is proven
    to render the same bytes, then from the template."""

    def __init__(self, hdf5_write: Callable[[Path, np.ndarray, int, int], None]) -> None:
        self.hdf5_write = hdf5_write
        self.templates: dict[tuple[Any, ...], _Template | None] = {}
        self.rendered = 0  # files written from a template (for logs and tests)

    def write(self, path: Path, data: np.ndarray, first: int, n: int) -> None:
        key = (data.shape, data.dtype.str, np.asarray(first).dtype.str, np.asarray(n).dtype.str)
        template = self.templates.get(key, False)
        if template is False:  # first file of this kind: HDF5 writes it, and the template must agree
            self.hdf5_write(path, data, first, n)
            learned = _learn(data, first, n)
            if learned is not None and learned.render(data, first, n) != Path(path).read_bytes():
                learned = None
            self.templates[key] = learned
            return
        if template is None:
            self.hdf5_write(path, data, first, n)
            return
        image = template.render(data, first, n)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.rendered += 1


def merge_partial(partial: Path, recovered: dict[int, Path], out: Path) -> Path | None:
    """One result file for a chunk whose attempt lost some points, with the rows of those points
    computed since (``recovered``: point -> its one-point result file) put back in point order.

    ``partial`` is a :func:`write_partial` file (``missing_points``, ``row_counts``).
    Returns the file to combine: ``partial`` itself when nothing was recovered, ``out`` when rows
    were merged, None when there are no rows at all. The merged file keeps ``first_point`` and
    ``n_points`` and names in ``missing_points`` the points still missing.
    """
    with h5py.File(partial, "r") as fh:
        data = fh["data"][...]
        attrs = {k: fh.attrs[k] for k in ("first_point", "n_points")}
        missing = [int(p) for p in fh.attrs["missing_points"]]
        counts = [int(c) for c in fh.attrs["row_counts"]]
    if not recovered:
        return partial if data.shape[0] else None
    rows_of: dict[int, np.ndarray] = {}
    at = 0
    present = [p for p in range(int(attrs["first_point"]), int(attrs["first_point"]) + int(attrs["n_points"]))
               if p not in set(missing)]
    for point, count in zip(present, counts):
        rows_of[point] = data[at : at + count]
        at += count
    for point, path in recovered.items():
        with h5py.File(path, "r") as fh:
            rows = fh["data"][...]
        rows_of[point] = rows
    if not data.shape[0]:  # no row of the partial attempt: its (0, 0) placeholder has no width
        rows_of = {p: r for p, r in rows_of.items() if p in recovered}
    merged = np.concatenate([rows_of[p] for p in sorted(rows_of)])
    with h5py.File(out, "w") as fh:
        fh.create_dataset("data", data=merged)
        for k, v in attrs.items():
            fh.attrs[k] = v
        fh.attrs["missing_points"] = np.asarray(sorted(set(missing) - set(recovered)), dtype=np.int64)
        fh.attrs["row_counts"] = np.asarray([len(rows_of[p]) for p in sorted(rows_of)], dtype=np.int64)
    return out


def row_points(path: Path) -> np.ndarray:
    """The point number of each row of a partial (or merged) result file, from its attributes."""
    with h5py.File(path, "r") as fh:
        first, n = int(fh.attrs["first_point"]), int(fh.attrs["n_points"])
        missing = {int(p) for p in fh.attrs["missing_points"]}
        counts = [int(c) for c in fh.attrs["row_counts"]]
    present = [p for p in range(first, first + n) if p not in missing]
    return np.repeat(np.asarray(present, dtype=np.int64), counts)


def rows_in(path: Path) -> int | None:
    """Rows of ``data`` in a script's OUTFILE (None: no file or no ``data``)."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as fh:
            return int(fh["data"].shape[0])
    except (OSError, KeyError, IndexError):
        return None


def mark_partial(fh: h5py.File, first: int, n: int, missing: list[int], counts: list[int]) -> None:
    """The attributes that make a file a partial result (see ``write_partial``)."""
    fh.attrs["first_point"] = first
    fh.attrs["n_points"] = n
    fh.attrs["missing_points"] = np.asarray(missing, dtype=np.int64)
    fh.attrs["row_counts"] = np.asarray(counts, dtype=np.int64)


def write_partial(path: Path, data: np.ndarray | None, first: int, n: int, missing: list[int],
                  counts: list[int]) -> None:
    """A result file that lacks some points: ``data`` holds the rows of the others in point order,
    attributes ``missing_points`` (indexes) and ``row_counts`` (rows per present point, in order)
    say which rows belong to which point. A file with no rows has a (0, 0) ``data``."""
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=np.zeros((0, 0)) if data is None else data)
        mark_partial(fh, first, n, missing, counts)


def stack_rows(rows: list[Any], kept: list[int], target: str) -> np.ndarray:
    """The rows of a subproblem as one float64 array: flat tuples in one conversion, else row by row.
    Rows that cannot be put together raise ValueError naming the point (the subproblem fails whole)."""
    if rows and all(type(r) is tuple for r in rows):
        try:
            data = np.asarray(rows)
        except (ValueError, TypeError):
            data = None
        if data is not None and data.ndim == 2 and data.shape[1] > 0 and data.dtype.kind in "biuf":
            return np.ascontiguousarray(data, dtype=np.float64)
    arrays = []
    for index, row in zip(kept, rows):
        try:
            arrays.append(row if isinstance(row, np.ndarray) else rows_from_result(row, index, target))
        except Exception as exc:
            raise ValueError(f"point {index}: {exc}") from None
    try:
        return np.vstack(arrays)
    except ValueError as exc:
        raise ValueError(f"point {kept[0]}: rows of different widths: {exc}") from None
