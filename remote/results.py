"""Result files written from a template: byte for byte what HDF5 writes, at the cost of one file write.

A worker writes one result file per subproblem (``data`` plus the attributes ``first_point`` and
``n_points``; see ``remote.worker._write_result``). HDF5 spends most of a small file's cost in its
own bookkeeping, and every file of one shape and dtype differs from the others only in its rows and
the two attribute values. So, per (shape, dtype), :class:`ResultWriter` has HDF5 write the first
file of a shape itself and build one more in memory with other attribute values (and zero rows),
learns from that probe where the rows and the two values are, and renders the first file from it:
only if the rendering is HDF5's file byte for byte does the shape use the template (from then on
its header, the new rows and its trailer are written with the new values patched in, the rows not
copied); anything unexpected (a checksum, values found twice, an unallocated dataset) leaves that
shape on HDF5's path. Learning costs two file images and a comparison, in C: ~0.2 s for a 20 MB file.

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
from mcc.work import pack

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
    """A result file's bytes with the places of its rows and of the two attribute values."""

    def __init__(self, image: bytes, data_at: int, nbytes: int, first_at: int, n_at: int) -> None:
        self.head, self.tail = image[:data_at], image[data_at + nbytes :]
        self.nbytes = nbytes
        # where each value goes: (offset, in the trailer?) — before the rows is the header
        self.values = [(at, False) if at < data_at else (at - data_at - nbytes, True) for at in (first_at, n_at)]

    def parts(self, data: np.ndarray, first: Any, n: Any) -> list[Any]:
        """The file as (header, rows, trailer) buffers, the values patched in; the rows are not copied."""
        head, tail = bytearray(self.head), bytearray(self.tail)
        for (at, in_tail), value in zip(self.values, (first, n)):
            raw = np.asarray(value).tobytes()
            (tail if in_tail else head)[at : at + len(raw)] = raw
        rows = memoryview(np.ascontiguousarray(data)).cast("B")
        assert len(rows) == self.nbytes
        return [head, rows, tail]

    def render(self, data: np.ndarray, first: Any, n: Any) -> bytes:
        return b"".join(self.parts(data, first, n))


def _learn(data: np.ndarray, first: Any, n: Any, written: bytes) -> _Template | None:
    """The template for files like ``written`` (what HDF5 wrote for these rows and values), or None if
    its layout is not the simple one expected.

    One probe image of the same shape, with zero rows and other attribute values, shows where the
    rows and the values are."""
    first_b, n_b = np.asarray(first).tobytes(), np.asarray(n).tobytes()
    first_t, n_t = np.asarray(first).dtype, np.asarray(n).dtype
    if data.nbytes == 0 or first_t.itemsize != 8 or n_t.itemsize != 8:
        return None
    probes = [(np.array(f, dtype=first_t), np.array(k, dtype=n_t)) for f, k in _PROBES]
    probes = [(f, k) for f, k in probes if f.tobytes() != first_b and k.tobytes() != n_b]
    if not probes:
        return None
    p_first, p_n = probes[0]
    image, offset = hdf5_image(np.zeros_like(data), p_first, p_n)
    if offset is None or len(image) != len(written) or offset + data.nbytes > len(image):
        return None
    end = offset + data.nbytes  # the rows: zeros in the probe image, so no value is found among them
    at = [_once_outside(image, probe.tobytes(), offset, end) for probe in (p_first, p_n)]
    if min(at) < 0 or written[at[0] : at[0] + 8] != first_b or written[at[1] : at[1] + 8] != n_b:
        return None
    template = _Template(image, offset, data.nbytes, at[0], at[1])
    # the probe image with these rows and values patched in must be HDF5's file: so no other byte
    # depends on the values or the rows (a checksum, say), or the shape stays on HDF5's path
    return template if template.render(data, first, n) == written else None


def _once_outside(image: bytes, probe: bytes, start: int, end: int) -> int:
    """The one place of ``probe`` in ``image`` outside ``[start, end)``; -1 if it is not there or there twice."""
    hits: list[int] = []
    for lo, hi in ((0, start), (end, len(image))):
        k = image.find(probe, lo, hi)
        while k >= 0 and len(hits) < 2:
            hits.append(k)
            k = image.find(probe, k + 1, hi)
    return hits[0] if len(hits) == 1 else -1


class ResultWriter:
    """Writes result files through ``hdf5_write`` (the HDF5 path) until a shape's template is proven
    to render the same bytes, then from the template."""

    def __init__(self, hdf5_write: Callable[[Path, np.ndarray, int, int], None]) -> None:
        self.hdf5_write = hdf5_write
        self.templates: dict[tuple[Any, ...], _Template | None] = {}
        self.rendered = 0  # files written from a template (for logs and tests)

    def write(self, path: Path, data: np.ndarray, first: int, n: int) -> None:
        key = _kind(data, first, n)
        template = self.templates.get(key, False)
        if template is False:  # first file of this kind: HDF5 writes it, and the template must agree
            self.hdf5_write(path, data, first, n)
            self.templates[key] = _learn(data, first, n, Path(path).read_bytes())
            return
        if template is None:
            self.hdf5_write(path, data, first, n)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            pack.append(fd, template.parts(data, first, n))
        finally:
            os.close(fd)
        self.rendered += 1

    def append(self, fd: int, data: np.ndarray, first: int, n: int, scratch: Callable[[], Path]) -> tuple[int, int]:
        """The result file of these rows, written at the end of the open batch object ``fd``:
        rendered from the shape's template straight into the object, else through HDF5 at ``scratch()``
        and copied in. (offset, size) of the member."""
        template = self.templates.get(_kind(data, first, n))
        if template:
            self.rendered += 1
            return pack.append(fd, template.parts(data, first, n))
        path = scratch()
        self.write(path, data, first, n)
        return pack.append_file(fd, path)


def _kind(data: np.ndarray, first: Any, n: Any) -> tuple[Any, ...]:
    """What a template is for: the rows' shape and dtype, the two attribute values' dtypes."""
    return data.shape, data.dtype.str, np.asarray(first).dtype.str, np.asarray(n).dtype.str


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


def add_row_counts(path: Path, counts: list[int]) -> None:
    """Record in a complete result file how many rows each of its points gave, when they differ (an entry
    returning a variable number of rows per point): the combined file's ``point_index`` comes from it."""
    if len(set(counts)) > 1:
        with h5py.File(path, "a") as fh:
            fh.attrs["row_counts"] = np.asarray(counts, dtype=np.int64)


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
