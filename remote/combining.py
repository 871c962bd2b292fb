"""The manager's side of the results: finding each subproblem's result in the bucket, and combining them.

Every done subproblem's result is a member of one batch object (:mod:`mcc.work.pack`), the one its
winning ack recorded in the queue. :class:`RunResults` finds members (and rebuilds sub → object from the
bucket when the queue was lost); :class:`IncrementalCombine` appends each chunk's rows to the combined
file as soon as every chunk before it is settled (done or dead), so the end of a run has only the
last few left to combine, with the built-in combiner. A user's ``combine_data`` runs at the end, on one
file per subproblem split out of the objects (its contract).
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from mcc.remote.results import merge_partial, row_points
from mcc.remote.runtime import Runtime
from mcc.work import pack
from mcc.work.combine import StreamCombiner
from mcc.work.queue import point_subproblem
from mcc.work.runspec import RESULTS, is_partial_result_key, partial_result_key, result_key, sub_of_result_key

Members = dict[tuple[int, tuple[int, ...] | None], pack.Member]  # an object's members by (sub, missing points)
OBJECTS_CACHED = 256  # indexes of result objects kept in memory (objects never change: a miss reads it again)
WINDOW = 1024  # chunks looked at per step of the incremental combine


class RunResults:
    """The results of one run in its bucket, as the manager reads them."""

    def __init__(self, rt: Runtime, log: logging.Logger) -> None:
        self.rt, self.log = rt, log
        self.cache: OrderedDict[str, Members] = OrderedDict()

    def in_bucket(self) -> tuple[set[int], dict[int, list[int]], dict[int, str]]:
        """The subproblems whose result is in the bucket; for chunks that have only partial results, the
        points the most complete one lacks (its point-subproblems count only if it is chosen); and the
        object each done subproblem is read from (the first by key order that holds it)."""
        base = len(self.rt.spec.chunks)
        complete: dict[int, str] = {}
        partials: dict[int, tuple[tuple[int, ...], str]] = {}  # the fewest missing points, first by key order
        for key in sorted(self.rt.store.list(RESULTS)):
            if not (pack.is_pack_key(key) or key.endswith(".h5")):
                continue
            try:
                found = self.members_of(key)
            except (ValueError, OSError) as exc:  # never sealed (a copy cut short): nothing in it was acked
                self.log.warning("result object %s skipped: %s", key, exc)
                continue
            for sub, missing in found:
                if missing is None:
                    complete.setdefault(sub, key)
                elif sub not in partials or len(missing) < len(partials[sub][0]):
                    partials[sub] = (missing, key)
        partial = {sub: list(m) for sub, (m, _) in partials.items() if sub not in complete}
        wanted = {point_subproblem(p, base) for pts in partial.values() for p in pts}
        done = {s for s in complete if s < base or s in wanted} | set(partial)
        results = {s: complete[s] if s in complete else partials[s][1] for s in done}
        return done, partial, results

    def fetch(self, keys: set[str]) -> None:
        """Bring objects from a remote bucket side by side (a local one is read in place)."""
        if self.rt.store.local_path(RESULTS) is None:
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(self.members_of, sorted(keys)))

    def members_of(self, key: str) -> Members:
        """The members of the result object ``key`` (a legacy one-file ``.h5`` result is one member)."""
        found = self.cache.get(key)
        if found is not None:
            self.cache.move_to_end(key)
            return found
        path = self.local_file(key)
        if pack.is_pack_key(key):
            members = pack.members(path)
        else:
            members = [pack.Member(sub_of_result_key(key), _legacy_missing(path) if is_partial_result_key(key) else None,
                                   0, os.path.getsize(path), str(path))]
        found = self.cache[key] = {(m.sub, m.missing): m for m in members}
        while len(self.cache) > OBJECTS_CACHED:
            self.cache.popitem(last=False)
        return found

    def member(self, sub: int, missing: list[int] | None, key: str | None) -> pack.Member:
        """Subproblem ``sub``'s result in the object its winning ack recorded (``key``; a queue from before
        batch objects recorded none: the legacy key)."""
        want = None if missing is None else tuple(missing)
        key = key or (result_key(sub) if want is None else partial_result_key(sub, list(want)))
        try:
            return self.members_of(key)[(sub, want)]
        except KeyError:
            raise RuntimeError(f"subproblem {sub}: its result is not in {key}") from None

    def chunk_result(self, sub: int, missing: list[int] | None, key_of: Callable[[int], str | None],
                     is_done: Callable[[int], bool]) -> pack.Member | Path | None:
        """What to combine for chunk ``sub``: its result, or (a partial ack) a file of its rows merged with
        those of its split-off points that have been computed since; None if it has no rows at all."""
        if missing is None:
            return self.member(sub, None, key_of(sub))
        base = len(self.rt.spec.chunks)
        recovered = {p: self.member_file(self.member(point_subproblem(p, base), None, key_of(point_subproblem(p, base))))
                     for p in missing if is_done(point_subproblem(p, base))}
        merged = self.rt.workdir / "merged" / f"{sub:07d}.h5"
        merged.parent.mkdir(parents=True, exist_ok=True)
        return merge_partial(self.member_file(self.member(sub, missing, key_of(sub))), recovered, merged)

    def sources(self, chunks: list[tuple[int, list[int] | None]], key_of: Callable[[int], str | None],
                is_done: Callable[[int], bool]) -> tuple[list[pack.Member | Path], list[Any]]:
        """What to combine for each of ``chunks`` ((sub, points its ack left out), in order) and, for each,
        the point of every row: its (first, n), or a merged partial's own list. Chunks without rows drop out."""
        sources: list[pack.Member | Path] = []
        labels: list[Any] = []
        for sub, missing in chunks:
            found = self.chunk_result(sub, missing, key_of, is_done)
            if found is not None:
                sources.append(found)
                labels.append(self.rt.spec.chunks[sub] if isinstance(found, pack.Member) else row_points(found))
        return sources, labels

    def member_file(self, member: pack.Member) -> Path:
        """A result file of its own for one member (what a user's combine_data and the merge of a partial read)."""
        if member.at == 0 and member.size == os.path.getsize(member.path):
            return Path(member.path)  # a legacy one-file result
        key = result_key(member.sub) if member.missing is None else partial_result_key(member.sub, list(member.missing))
        path = self.rt.workdir / "split" / Path(key).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(member.read())
        return path

    def local_file(self, key: str) -> Path:
        path = self.rt.store.local_path(key)
        if path is not None:
            return path
        path = self.rt.workdir / key
        self.rt.store.get_file(key, path)
        return path


class IncrementalCombine:
    """The combined file, built as the run goes: chunk ``next`` is appended once every chunk before it is.

    ``step`` (each manager tick) looks at the next chunks in order and appends those that are done, skips
    the dead, and stops at the first that is neither (or a partial chunk whose split-off points are not
    all settled yet). ``finish`` appends every done chunk left, in order, and completes the file. The
    file is ``combined.h5.part`` in the manager's work folder; a manager that dies leaves it behind,
    and its successor starts it over (the bucket's ``combined.h5`` only ever comes from ``finish``).
    """

    def __init__(self, results: RunResults, queue: Any, path: Path) -> None:
        self.results, self.q, self.path = results, queue, path
        self.base = len(results.rt.spec.chunks)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = StreamCombiner(path, indexed=True)
        self.next = 0  # chunks before this one are appended (or dead)
        self.appended = 0

    def step(self, budget_s: float = 0.1) -> int:
        """Append the chunks now settled at the front, for about ``budget_s`` at most (the rest at the next
        tick: a tick stays short); how many chunks were looked past."""
        start, began = self.next, time.monotonic()
        while self.next < self.base:
            ids = list(range(self.next, min(self.next + WINDOW, self.base)))
            states = self.q.settled(ids)
            ready = self._ready(ids, states)
            self._append(ready)
            if len(ready) < len(ids) or time.monotonic() - began > budget_s:  # one not settled yet, or time's up
                break
        return self.next - start

    def finish(self) -> Path:
        """Append every done chunk not yet appended, in order; the complete file."""
        while self.next < self.base:
            ids = list(range(self.next, min(self.next + WINDOW, self.base)))
            states = self.q.settled(ids)
            self._append([(s, st) for s, st in zip(ids, states) if st[0] == "done"], upto=ids[-1] + 1)
        self.stream.finish()
        return self.path

    def close(self) -> None:
        self.stream.close()

    def _ready(self, ids: list[int], states: list[tuple[str, str | None, list[int] | None]]) -> list[Any]:
        """The leading chunks of ``ids`` that are settled (a done partial chunk: with its split-off points)."""
        ready = []
        for sub, state in zip(ids, states):
            if state[0] == "" or (state[0] == "done" and state[2] and not self._points_settled(state[2])):
                break
            ready.append((sub, state))
        return ready

    def _points_settled(self, points: list[int]) -> bool:
        return all(st[0] for st in self.q.settled([point_subproblem(p, self.base) for p in points]))

    def _append(self, ready: list[Any], upto: int | None = None) -> None:
        done = [(sub, st) for sub, st in ready if st[0] == "done"]
        psubs = [point_subproblem(p, self.base) for _, st in done for p in st[2] or ()]  # of partial chunks
        states = {**dict(done), **dict(zip(psubs, self.q.settled(psubs)))}
        self.results.fetch({st[1] for _, st in done if st[1]})
        sources, labels = self.results.sources([(sub, st[2]) for sub, st in done], lambda s: states[s][1],
                                               lambda s: states[s][0] == "done")
        self.stream.add(sources, labels)
        self.appended += len(sources)
        self.next = upto if upto is not None else (ready[-1][0] + 1 if ready else self.next)


def _legacy_missing(path: Path) -> tuple[int, ...]:
    import h5py

    with h5py.File(path, "r") as fh:
        return tuple(sorted(int(p) for p in fh.attrs["missing_points"]))
