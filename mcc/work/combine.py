"""Combining per-subproblem result files into one: the user's ``combine_data`` or the built-in one.

A result file is a file of its own or a member of a batch object (:class:`mcc.work.pack.Member`)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence, Union

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5p, h5s

from mcc.work.pack import Member, read_at

Source = Union[str, Path, Member]

BLOCK_BYTES = 4 * 2**20  # rows are gathered in a buffer of this size, then written in one call
SMALL_FILE_BYTES = 2**20  # files up to this size are read whole in one read (HDF5's core driver)
FIRST_READ = 64 * 1024
OBJECT_READ_BYTES = 8 * 2**20  # batch objects up to this size are read whole, in one read


def builtin_combine(files: Sequence[Source], fileout: str, chunks: Sequence[tuple[int, int]] | None = None) -> None:
    """Concatenate the ``data`` datasets of ``files`` (result files or batch object members, in the
    given order) into ``fileout``.

    With ``chunks`` (the ``(first_point, n_points)`` of each file's subproblem) a ``point_index``
    dataset gives each row its point number, so the gaps left by dead points are explicit: a file
    with one row per point numbers them ``first_point …``, one with ``k`` rows per point repeats
    each number ``k`` times, one whose points gave different row counts says so in its ``row_counts``
    attribute (the worker writes it, :func:`mcc.remote.results.add_row_counts`), any other row count is
    numbered -1 (unknown). A chunk given as an array
    instead is the point number of each row (a partial result: ``mcc.remote.results.row_points``).
    A result that fits in one block is stored contiguously at its exact size (no chunk padding).

    One pass, each file read once, its rows (converted to float64) gathered in a fixed-size block
    buffer, and a full block appended to the output dataset in one write. The memory used is one
    block (or one file's rows, if a single file is larger), never the whole result; the output
    dataset grows as blocks arrive (chunked, resizable along the rows).

    Result files are many and alike (the workers write them all the same way), and opening one with
    HDF5 costs ~20× reading its bytes; see :class:`_Layouts` for how most files skip the HDF5 open.
    """
    combiner = StreamCombiner(fileout, indexed=chunks is not None)
    try:
        combiner.add(list(files), None if chunks is None else list(chunks))
        combiner.finish()
    finally:
        combiner.close()


class StreamCombiner:
    """:func:`builtin_combine` as a stream: ``add`` result files in order, as they come, then ``finish``.

    The manager feeds it each subproblem's result as soon as every subproblem before it is settled, so
    at the end of a run only the last few are left to combine (``remote.manager``). Nothing is
    published until ``finish`` returns: a process killed in between leaves a ``fileout`` that its
    successor starts over (its caller writes to a temporary name and moves it into place)."""

    def __init__(self, fileout: str | Path, indexed: bool) -> None:
        self.out = h5py.File(fileout, "w")
        self.indexed = indexed
        self.small, self.large = _read_fapls()
        self.layouts = _Layouts()
        self.writer: _BlockWriter | None = None
        self.rows_per_file: list[int] = []
        self.counts_per_file: list[np.ndarray | None] = []  # a file's ``row_counts``: rows of each of its points
        self.chunks: list[Any] = []
        self.objects = _Objects()

    def add(self, files: Sequence[Source], chunks: Sequence[Any] | None = None) -> None:
        """Append the rows of ``files``, in order (``chunks``: their ``(first_point, n_points)`` or point
        arrays, given when ``indexed``)."""
        if self.indexed:
            if chunks is None or len(chunks) != len(files):
                raise ValueError(f"{len(files)} result files but {0 if chunks is None else len(chunks)} subproblems given")
            self.chunks += list(chunks)
        files = list(files)
        rows_per_file, counts_per_file, layouts = self.rows_per_file, self.counts_per_file, self.layouts
        i = 0
        while i < len(files):
            source = files[i]
            i += 1
            writer = self.writer
            if isinstance(source, Member) and writer is not None:
                taken = _add_members(files, i - 1, self.objects, layouts, writer)
                if taken:
                    rows_per_file += [layouts.by_size[source.size].shape[0]] * taken
                    counts_per_file += [None] * taken
                    i += taken - 1
                    continue
            before = writer.rows if writer is not None else 0
            if isinstance(source, Member):
                name = f"{source.path} (subproblem {source.sub})"
                raw = self.objects.read(source) if source.size <= SMALL_FILE_BYTES else None
            else:
                name = str(source)
                fd = os.open(name, os.O_RDONLY)  # _read_small, inlined: this loop runs once per result file
                try:
                    raw = os.read(fd, FIRST_READ)  # most result files are a few KB: one read
                    if len(raw) == FIRST_READ:
                        raw = _read_rest(fd, raw)
                finally:
                    os.close(fd)
            layout = layouts.match(raw) if raw is not None else None
            if layout is not None:
                if writer is None:
                    writer = self.writer = _BlockWriter(self.out, _width(name, layout.shape))
                writer.add_bytes(name, raw, layout)  # type: ignore[arg-type]
                rows_per_file.append(writer.rows - before)
                counts_per_file.append(None)
                continue
            fid, close = _open(source, raw, self.small, self.large)
            try:
                counts = _row_counts(fid)
                dset = h5d.open(fid, b"data")
                try:
                    if writer is None:
                        writer = self.writer = _BlockWriter(self.out, _width(name, dset.shape))
                    writer.read_from(name, dset)
                    if raw is not None and counts is None:  # a file's counts are never read from its bytes
                        layouts.learn(raw, dset)
                finally:
                    dset.close()
            finally:
                close()
            rows_per_file.append(writer.rows - before)
            counts_per_file.append(counts)

    def finish(self) -> None:
        """Write what is still in the block, and ``point_index``; the file is complete when this returns."""
        self.objects.close()
        if self.writer is None:
            self.out.create_dataset("data", (0, 0), dtype="float64")
        else:
            self.writer.finish()
            if self.indexed:
                _write_point_index(self.out, self.chunks, self.rows_per_file, self.counts_per_file)
        self.out.close()

    def close(self) -> None:
        self.objects.close()
        self.out.close()


def _add_members(files: list[Source], i: int, objects: "_Objects", layouts: "_Layouts",
                 writer: "_BlockWriter") -> int:
    """Append the rows of the members ``files[i:]`` of one object that share a known layout, all in a few
    numpy operations (a batch object holds up to 64 results alike); how many were taken (0: none, the
    caller reads ``files[i]`` alone). The bytes outside the rows are checked against the layout member
    by member, as :meth:`_Layouts.match` does; the first that differs ends the run."""
    first = files[i]
    assert isinstance(first, Member)
    layout, size = layouts.by_size.get(first.size), first.size
    if layout is None or size > SMALL_FILE_BYTES or not objects.whole_of(first):
        return 0
    j = i + 1
    while j < len(files) and j - i < 4096:
        m = files[j]
        if not (isinstance(m, Member) and m.path == first.path and m.size == size):
            break
        j += 1
    if j - i < 2:
        return 0
    buf = np.frombuffer(objects.whole, dtype=np.uint8)
    at = np.fromiter((files[k].at for k in range(i, j)), dtype=np.int64, count=j - i)  # type: ignore[union-attr]
    if at.min() < 0 or int(at.max()) + size > len(buf):
        return 0
    if (np.diff(at) == size).all():  # back to back, as the child writes them: a view, no copy
        grid = buf[int(at[0]) : int(at[0]) + len(at) * size].reshape(len(at), size)
    else:  # junk between them (a child killed mid-write), or given out of order
        grid = buf[at[:, None] + np.arange(size)]  # one row of bytes per member
    same = np.ones(len(at), dtype=bool)
    for start, piece in layout.pieces:
        same &= (grid[:, start : start + len(piece)] == np.frombuffer(piece, dtype=np.uint8)).all(axis=1)
    taken = len(at) if same.all() else int(np.argmin(same))
    if taken == 0:
        return 0
    rows = np.ascontiguousarray(grid[:taken, layout.offset : layout.offset + layout.nbytes]).view(layout.dtype)
    writer.add(f"{first.path} (subproblems {first.sub}…)", rows.reshape((taken * layout.shape[0],) + layout.shape[1:]))
    return taken


class _Objects:
    """Reads members of batch objects: the last object read whole, in one read, if it is small (members
    come object by object), else kept open and read member by member."""

    def __init__(self) -> None:
        self.path, self.fd, self.whole = "", -1, b""

    def whole_of(self, member: Member) -> bytes:
        """The bytes of ``member``'s object if it is read whole (b"" if it is too large for that)."""
        if member.path != self.path:
            self.read(member)
        return self.whole

    def read(self, member: Member) -> bytes:
        if member.path != self.path:
            self.close()
            self.fd, self.path = os.open(member.path, os.O_RDONLY), member.path
            size = os.fstat(self.fd).st_size
            if size <= OBJECT_READ_BYTES:
                self.whole = read_at(self.fd, 0, size)
        if self.whole:
            return self.whole[member.at : member.at + member.size]
        return read_at(self.fd, member.at, member.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.path, self.fd, self.whole = "", -1, b""


class _Window(io.RawIOBase):
    """A member of a batch object as a read-only file (HDF5 reads a large member in place through it)."""

    def __init__(self, member: Member) -> None:
        self.fh = open(member.path, "rb")
        self.start, self.size, self.pos = member.at, member.size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        want = max(0, min(len(buf), self.size - self.pos))
        self.fh.seek(self.start + self.pos)
        got = self.fh.readinto(memoryview(buf)[:want])
        self.pos += got
        return got

    def close(self) -> None:
        self.fh.close()
        super().close()


def _open(source: Source, raw: bytes | None, small: h5p.PropFAID,
          large: h5p.PropFAID) -> tuple[h5f.FileID, Callable[[], None]]:
    """HDF5's handle on a result file, and what closes it (a large member: the file and its window)."""
    if not isinstance(source, Member):
        fid = h5f.open(os.fsencode(str(source)), h5f.ACC_RDONLY, fapl=small if raw is not None else large)
        return fid, fid.close
    if raw is not None:  # a small member: HDF5 reads it from the bytes already in memory
        fapl = h5p.create(h5p.FILE_ACCESS)
        fapl.set_fapl_core(64 * 1024, False)
        fapl.set_file_image(raw)
        fid = h5f.open(b"member", h5f.ACC_RDONLY, fapl=fapl)
        return fid, fid.close
    window = _Window(source)
    handle = h5py.File(window, "r")

    def close() -> None:
        handle.close()
        window.close()

    return handle.id, close


def _row_counts(fid: h5f.FileID) -> np.ndarray | None:
    """The ``row_counts`` attribute of an open result file (rows of each point), None if it has none."""
    if not h5a.exists(fid, b"row_counts"):
        return None
    attr = h5a.open(fid, b"row_counts")
    try:
        counts = np.empty(attr.shape, dtype=np.int64)
        attr.read(counts)
    finally:
        attr.close()
    return counts


def _write_point_index(out: h5py.File, chunks: list[tuple[int, int]], rows_per_file: list[int],
                       counts_per_file: list[np.ndarray | None]) -> None:
    """``point_index``: the point number of every row of ``data`` (see :func:`builtin_combine`)."""
    if len(chunks) != len(rows_per_file):
        raise ValueError(f"{len(rows_per_file)} result files but {len(chunks)} subproblems given")
    total = sum(rows_per_file)
    last = max((int(c.max(initial=-1)) + 1 if isinstance(c, np.ndarray) else c[0] + c[1] for c in chunks), default=0)
    dtype = np.int32 if last < 2**31 else np.int64  # 4 bytes a row for any sweep below 2 billion points
    dset = out.create_dataset("point_index", (total,), dtype=dtype)
    dset.attrs["description"] = "the point number (index into get_points()) of each row of data; -1: unknown"
    at, parts, held = 0, [], 0
    for chunk, rows, counts in zip(chunks, rows_per_file, counts_per_file):
        if isinstance(chunk, np.ndarray):  # a partial result: the point of each of its rows, given
            parts.append(chunk.astype(dtype) if len(chunk) == rows else np.full(rows, -1, dtype=dtype))
            held += rows
            continue
        first, n = chunk
        if counts is not None and len(counts) == n and int(counts.sum()) == rows:
            parts.append(np.repeat(np.arange(first, first + n, dtype=dtype), counts))
        elif rows == n:
            parts.append(np.arange(first, first + n, dtype=dtype))
        elif n and rows % n == 0:
            parts.append(np.repeat(np.arange(first, first + n, dtype=dtype), rows // n))
        else:
            parts.append(np.full(rows, -1, dtype=dtype))
        held += rows
        if held * 8 >= BLOCK_BYTES:
            dset[at : at + held] = np.concatenate(parts)
            at, parts, held = at + held, [], 0
    if held:
        dset[at : at + held] = np.concatenate(parts)


def _read_rest(fd: int, first: bytes) -> bytes | None:
    """The whole file, given its first bytes, if it is small (else None: HDF5 reads it)."""
    size = os.fstat(fd).st_size
    return first + os.read(fd, size - len(first)) if size <= SMALL_FILE_BYTES else None


def _width(name: str, shape: tuple[int, ...]) -> int:
    if len(shape) not in (1, 2):
        raise ValueError(f"{name}: `data` has shape {shape}; the built-in combiner takes 1-D or 2-D "
                         f"rows; write a combine_data.py")
    width = shape[1] if len(shape) > 1 else 1
    if width == 0:
        raise ValueError(f"{name}: `data` rows have no columns (shape {shape})")
    return width


class _Layout(NamedTuple):
    template: bytes  # a whole file of this layout
    offset: int  # where its rows start
    shape: tuple[int, ...]
    dtype: np.dtype
    spans: list[tuple[int, int]]  # byte ranges every file of this layout has equal to the template
    pieces: tuple[tuple[int, bytes], ...]  # the same, as (start, the template's bytes there)
    float64: bool  # rows already native float64: copied as bytes
    nbytes: int  # of the rows


class _Layouts:
    """Where the rows of a small result file are, learned from files HDF5 has opened.

    A file HDF5 opened whose ``data`` is stored contiguously (no filters, no external storage)
    becomes the layout of its file size: its bytes, the data's offset, shape and dtype. A later file
    of the same size whose bytes outside the data region equal the layout's (except at positions
    known to vary) holds its rows at the same offset, and they are read straight from its bytes.
    Positions known to vary are those where two files of the same size, both opened by HDF5 and
    found to share offset, shape and dtype, differed: attribute values such as ``first_point``.
    Any other difference sends the file through HDF5, so a file written another way is never
    misread, only read more slowly.
    """

    def __init__(self) -> None:
        self.by_size: dict[int, _Layout] = {}

    def match(self, raw: bytes) -> _Layout | None:
        """The layout of this file's bytes, if it is a known one."""
        layout = self.by_size.get(len(raw))
        if layout is None:
            return None
        for start, piece in layout.pieces:
            if not raw.startswith(piece, start):  # compares in place, no copy
                return None
        return layout

    def learn(self, raw: bytes, dset: h5d.DatasetID) -> None:
        """Record (or refine) the layout of a file HDF5 has opened, from its bytes and its dataset."""
        where = _contiguous(dset)
        if where is None:
            return
        offset, shape, dtype = where
        known = self.by_size.get(len(raw))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if known is None:
            fixed = np.ones(len(raw), dtype=bool)
        else:
            if (known.offset, known.shape, known.dtype) != (offset, shape, dtype):
                return  # same size, other layout: such files keep going through HDF5
            fixed = np.zeros(len(raw), dtype=bool)
            for start, end in known.spans:
                fixed[start:end] = True
            fixed &= np.frombuffer(raw, dtype=np.uint8) == np.frombuffer(known.template, dtype=np.uint8)
            raw = known.template
        fixed[offset : offset + nbytes] = False  # the rows
        spans = _runs(fixed)
        self.by_size[len(raw)] = _Layout(raw, offset, shape, dtype, spans,
                                         tuple((start, raw[start:end]) for start, end in spans),
                                         dtype == np.dtype(np.float64), nbytes)


def _contiguous(dset: h5d.DatasetID) -> tuple[int, tuple[int, ...], np.dtype] | None:
    """(offset, shape, dtype) of a dataset stored contiguously in its file, in a plain numeric type."""
    dcpl = dset.get_create_plist()
    dtype = dset.dtype
    offset = dset.get_offset()
    if (dcpl.get_layout() != h5d.CONTIGUOUS or dcpl.get_nfilters() or dcpl.get_external_count()
            or offset is None or dtype.kind not in "fiu" or dtype.fields is not None
            or dset.get_storage_size() != int(np.prod(dset.shape)) * dtype.itemsize):
        return None
    return offset, tuple(dset.shape), dtype


def _runs(where: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges where the bool array ``where`` is True, in order (vectorised: a
    file's bytes are up to SMALL_FILE_BYTES positions)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], where.astype(np.int8), [0]))))
    return [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2])]


class _BlockWriter:
    """Appends rows to ``out["data"]`` (float64, ``width`` columns) through one reusable block buffer."""

    def __init__(self, out: h5py.File, width: int) -> None:
        self.width = width
        rows = max(1, BLOCK_BYTES // (8 * width))
        self.block = np.empty((rows, width), dtype=np.float64)
        self.row_bytes = 8 * width
        self.checked: _Layout | None = None  # the last layout whose shape passed _check
        self.capacity = len(self.block)
        self.used = 0
        self.out = out
        self.dset: h5py.Dataset | None = None  # created by the first full block, or by finish()
        self.total = 0

    @property
    def rows(self) -> int:
        """Rows added so far (written or still in the block)."""
        return self.total + self.used

    def finish(self) -> None:
        """Write what the block holds. A result that never filled a block becomes one contiguous
        dataset of exactly its size (a chunked one would allocate a whole block-sized chunk)."""
        if self.dset is None:
            self.dset = self.out.create_dataset("data", data=self.block[: self.used])
            self.total, self.used = self.used, 0
            return
        self.flush()

    def read_from(self, name: str, dset: h5d.DatasetID) -> None:
        """Append the rows of an open HDF5 dataset (HDF5 converts them to float64)."""
        rows = self._check(name, dset.shape)

        def copy(at: int, take: int, into: np.ndarray) -> None:
            if take == rows:
                dset.read(h5s.ALL, h5s.ALL, into)
                return
            space = dset.get_space()
            space.select_hyperslab((at,) + (0,) * (len(dset.shape) - 1), (take,) + tuple(dset.shape[1:]))
            dset.read(h5s.create_simple(into.shape), space, into)

        self._fill(rows, copy)

    def add_bytes(self, name: str, raw: bytes, layout: _Layout) -> None:
        """Append the rows held in a result file's bytes at ``layout``."""
        if layout is not self.checked:
            self._check(name, layout.shape)
            self.checked = layout  # the next file of this layout needs no check
        rows = layout.shape[0]
        if not layout.float64:
            data = np.frombuffer(raw, dtype=layout.dtype, count=rows * self.width, offset=layout.offset)
            self.add(name, data.reshape(rows, self.width))
            return
        source, size = memoryview(raw)[layout.offset : layout.offset + layout.nbytes], self.row_bytes

        def copy(at: int, take: int, into: np.ndarray) -> None:
            memoryview(into).cast("B")[:] = source[at * size : (at + take) * size]

        self._fill(rows, copy)

    def add(self, name: str, data: np.ndarray) -> None:
        """Append rows already in memory (1-D data is one column)."""
        rows = self._check(name, data.shape)
        data = data.reshape(rows, self.width)

        def copy(at: int, take: int, into: np.ndarray) -> None:
            into[...] = data[at : at + take]

        self._fill(rows, copy)

    def _fill(self, rows: int, copy: Callable[[int, int, np.ndarray], None]) -> None:
        """Put ``rows`` rows into the block, ``copy(first row, rows, block slice)`` at a time, writing
        each block as it fills: every write is one whole chunk of the output (a write across two
        chunks, or of part of one, makes HDF5 read the chunk back first)."""
        at = 0
        while at < rows:
            take = min(self.capacity - self.used, rows - at)
            copy(at, take, self.block[self.used : self.used + take])
            self.used += take
            at += take
            if self.used == self.capacity:
                self.flush()

    def _check(self, name: str, shape: tuple[int, ...]) -> int:
        width = _width(name, shape)
        if width != self.width:
            raise ValueError(f"result files have different row widths {sorted({width, self.width})}; "
                             f"write a combine_data.py")
        return shape[0]

    def flush(self) -> None:
        if self.used:
            self._append(self.block[: self.used])
            self.used = 0

    def _append(self, rows: np.ndarray) -> None:
        if self.dset is None:  # one chunk per block: a full block is one chunk write, past the chunk cache
            self.dset = self.out.create_dataset("data", (0, self.width), maxshape=(None, self.width),
                                                dtype="float64", chunks=(len(self.block), self.width))
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


def combine_files(files: Sequence[Source], fileout: Path, combiner: Callable[[list[str], str], None] | None,
                  chunks: Sequence[tuple[int, int]] | None = None) -> None:
    """Run the combiner into a temporary file, then move it into place (never a half-written output).

    ``chunks`` (``(first_point, n_points)`` per file) gives the built-in combiner's ``point_index``; a
    user's combiner gets file names only (the caller splits batch objects into files for it)."""
    tmp = fileout.with_name(fileout.name + ".part")
    tmp.unlink(missing_ok=True)
    if combiner is None:
        builtin_combine(list(files), str(tmp), chunks)
    else:
        combiner([str(f) for f in files], str(tmp))
    if not tmp.exists():
        raise RuntimeError("combine_data(files, fileout) returned without writing fileout")
    tmp.replace(fileout)
