"""Batch result objects: the result files of one batch of subproblems, in one object.

A worker writes one object per batch of subproblems it acks together (``results/<worker>-<tag>-<seq>.pack``):
the members (each a whole result file, as HDF5 reads it: ``data`` plus ``first_point``/``n_points``, a
partial result's ``missing_points``/``row_counts``) one after the other, then an index, then a fixed
trailer. The index is JSON: per member its subproblem, the points it lacks (a partial result) and its
byte range. Bytes the index does not name (a compute child killed in the middle of a member) are
ignored. The ack carries the object's key, and the queue records sub → key for the first winning ack
only, so a subproblem computed twice is read from exactly one object.

Why objects per batch and not per subproblem: creating and moving a file costs more than computing a
small subproblem (bench B1/c1); with one object per batch that cost is paid once per batch.
"""
from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from mcc.work.runspec import RESULTS

SUFFIX = ".pack"
MAGIC = b"MCCPACK1"
_TRAILER = struct.Struct("<8sQ")  # magic, index length


class Member(NamedTuple):
    """One result file inside a batch object (``path``: the object, local). A tuple: a manager reads
    one per subproblem, and a tuple is cheap to make."""

    sub: int
    missing: tuple[int, ...] | None  # a partial result: the points it lacks (sorted); None: complete
    at: int
    size: int
    path: str = ""

    def read(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return read_at(fd, self.at, self.size)
        finally:
            os.close(fd)


def pack_key(worker: str, tag: str, seq: int) -> str:
    """The key of a worker's ``seq``-th batch object; ``tag`` tells apart two processes with one worker id."""
    return f"{RESULTS}{worker.replace('/', '_')}-{tag}-{seq:06d}{SUFFIX}"


def is_pack_key(key: str) -> bool:
    return key.startswith(RESULTS) and key.endswith(SUFFIX)


def read_at(fd: int, at: int, size: int) -> bytes:
    """``size`` bytes at ``at`` (a short read is a truncated object: ValueError)."""
    raw = os.pread(fd, size, at)
    while len(raw) < size:
        more = os.pread(fd, size - len(raw), at + len(raw))
        if not more:
            raise ValueError(f"a batch object ends {size - len(raw)} bytes early")
        raw += more
    return raw


def append(fd: int, parts: Sequence[Any]) -> tuple[int, int]:
    """Write ``parts`` (buffers) at the end of the open object; (offset, size) of what they make."""
    at = os.lseek(fd, 0, os.SEEK_END)
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    size = sum(len(v) for v in views)
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]
    return at, size


def append_file(fd: int, path: Path) -> tuple[int, int]:
    """Copy a result file to the end of the open object and delete it; (offset, size)."""
    src = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(src).st_size
        at = os.lseek(fd, 0, os.SEEK_END)
        copied = 0
        while copied < size:  # in the kernel where it can (copy_file_range), else read + write
            try:
                n = os.copy_file_range(src, fd, size - copied, copied)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                n = os.write(fd, os.pread(src, min(size - copied, 1 << 22), copied))
            if n == 0:
                raise ValueError(f"{path}: shorter than its size")
            copied += n
    finally:
        os.close(src)
    os.unlink(path)
    return at, size


def seal(fd: int, members: Iterable[tuple[int, tuple[int, ...] | None, int, int]]) -> None:
    """Write the index and trailer of ``members`` ((sub, missing, offset, size)) at the end of the open object.

    No fsync: like every result before it, an object outlives the processes (a SIGKILL), not the machine's
    power (an fsync per batch was 9 % of a chunk-1 worker's time)."""
    index = json.dumps([[sub, None if m is None else list(m), at, size] for sub, m, at, size in members],
                       separators=(",", ":")).encode()
    append(fd, [index, _TRAILER.pack(MAGIC, len(index))])


def copy_sealed(src: Path, members: Sequence[tuple[int, tuple[int, ...] | None, int, int]], dest: Path) -> None:
    """A new object at ``dest`` holding only ``members`` of the (unsealed) object ``src``."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        sfd = os.open(src, os.O_RDONLY)
        try:
            placed = []
            for sub, missing, at, size in members:
                new_at, _ = append(fd, [read_at(sfd, at, size)])
                placed.append((sub, missing, new_at, size))
        finally:
            os.close(sfd)
        seal(fd, placed)
    finally:
        os.close(fd)


def members(path: Path | str) -> list[Member]:
    """The members of a sealed object, in the order they were written; ValueError if it is not one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        if end < _TRAILER.size:
            raise ValueError(f"{path}: too short to be a batch object")
        magic, length = _TRAILER.unpack(read_at(fd, end - _TRAILER.size, _TRAILER.size))
        if magic != MAGIC or length > end - _TRAILER.size:
            raise ValueError(f"{path}: not a sealed batch object")
        index = json.loads(read_at(fd, end - _TRAILER.size - length, length))
    finally:
        os.close(fd)
    path, make = str(path), tuple.__new__  # Member(...) through tuple.__new__: 2.5× cheaper, one per subproblem
    return [make(Member, (sub, None if m is None else tuple(m), at, size, path)) for sub, m, at, size in index]
