"""The worker: claim a batch of subproblems, compute every point, store one result object for the batch, ack; repeat.

The compute child appends each subproblem's result file to the batch's object (:mod:`mcc.work.pack`);
the object is sealed and moved to its key in the bucket before the ack, which carries the key; the
queue records sub → key for the first winning ack only, so a subproblem computed twice is read from
exactly one object and the combined file holds each point once. The entry runs in a compute child
(:mod:`mcc.remote.compute`) that this process forks once and again only after a crash; this process
holds the leases and heartbeats. A point that raises or
crashes fails only itself: the subproblem is acked with the rows of its other points
(``Queue.ack_partial``, its result in an object of its own) and the failed point goes on as a
one-point subproblem of its own; the other claimed subproblems are computed as if nothing happened.
SIGTERM (or a spot notice) → the leases still held go back to the front of the queue as a preemption.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import redis
from h5py import h5f, h5p

from mcc.project.folder import load_function
from mcc.remote.compute import ChunkFailed, ComputeChild, Outcome, Preempted
from mcc.remote.output_cap import OutputCap
from mcc.work.diskspace import is_no_space
from mcc.work.pointerror import summarize
from mcc.work.queue import point_subproblem
from mcc.work import pack
from mcc.work.runspec import failure_key
from mcc.remote.results import ResultWriter, fill_result
from mcc.remote.runtime import Runtime, connect, setup_logging

BATCH_SECONDS = 0.1  # claim about this much work at a time (by the measured time per subproblem)...
MAX_BATCH = 64  # ...but never more subproblems than this in one claim
ACK_MAX_DELAY = 1.0  # seconds a computed subproblem may wait for the ack that goes with the next claim
IDLE_POLL_MAX = 0.2  # seconds between claims while the queue has nothing to lease


class Worker:
    def __init__(self, rt: Runtime, worker_id: str, notice: Callable[[], bool] | None = None) -> None:
        self.rt, self.id = rt, worker_id
        self.notice = notice  # e.g. the spot interruption notice from IMDS: hand leases back when it comes
        self.log = setup_logging(worker_id)
        self.points = rt.points()
        self.held: list[int] = []
        self.stop = threading.Event()
        spec = rt.spec
        if spec.project_dir not in sys.path:  # user code may import its siblings at call time
            sys.path.insert(0, spec.project_dir)
        fn = load_function(Path(spec.project_dir), spec.entry_target) if spec.entry_kind == "function" else None
        self.base = len(spec.chunks)
        self.child = ComputeChild(spec, self.points, fn, rt.workdir, ResultWriter(_write_result), self.stop)
        self.tag, self.seq = uuid.uuid4().hex[:8], 0  # this process's batch objects: <id>-<tag>-<seq>
        self.batch = rt.workdir / f"batch-{self.tag}.pack.part"  # the object being filled (unsealed)
        self.members: list[tuple[int, tuple[int, ...] | None, int, int]] = []  # in it, to be acked
        self.acks_key: str | None = None  # the stored object of self.acks, until their ack has gone out

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> int:
        """The claim loop (:meth:`_loop`), the compute child stopped however it ends."""
        try:
            return self._loop()
        finally:
            self.child.close()

    def _loop(self) -> int:
        """Claim a batch, compute it, and ack it together with the next claim (one round trip each).

        The batch is sized to about BATCH_SECONDS of this worker's measured work per subproblem, so
        tiny subproblems cost a fraction of a round trip each while slow ones are claimed one at a
        time (a batch never holds work another worker could have started long before).
        """
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        self.child.start()  # before the heartbeat thread exists: the first child copies one thread
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()
        self.acks: list[int] = []  # computed, result in the bucket, ack not yet sent (still held)
        self.acks_since = 0.0
        queue, spec = self.rt.queue, self.rt.spec
        idle_since, delay = time.monotonic(), 0.01
        per_sub: float | None = None  # moving average of seconds per subproblem
        most = claim_limit(len(spec.chunks), spec.workers)
        while not self.stop.is_set():
            try:
                want = 1 if per_sub is None else max(1, min(most, int(BATCH_SECONDS / max(per_sub, 1e-6))))
                key = self._seal(whole=True)
                _, ids = queue.ack_and_claim(self.id, self.acks, want, spec.lease_seconds, key=key)
                self.acks, self.acks_key = [], None
                self.held = list(ids)
                if not ids:
                    if queue.progress().finished:
                        self.log.info("queue finished; exiting")
                        return 0
                    if time.monotonic() - idle_since > spec.idle_exit_seconds:
                        self.log.info("idle for %.0f s; exiting", spec.idle_exit_seconds)
                        return 0
                    self.stop.wait(delay)
                    delay = min(delay * 2, IDLE_POLL_MAX)
                    continue
                idle_since, delay = time.monotonic(), 0.01
                started = time.monotonic()
                if self.stop.is_set():
                    raise Preempted
                for sub, result in self.child.run([(sub, *self._points(sub)) for sub in ids], self.batch):
                    self._settle(sub, result)
                    if self.acks and time.monotonic() - self.acks_since > ACK_MAX_DELAY:
                        self._flush_acks(whole=False)  # the child may still be appending to the object
                took = (time.monotonic() - started) / len(ids)
                per_sub = took if per_sub is None else 0.5 * per_sub + 0.5 * took
            except Preempted:
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - idle_since > spec.idle_exit_seconds:
                    self.log.error("queue unreachable for %.0f s (%s); exiting", spec.idle_exit_seconds, exc)
                    return 2
                self.stop.wait(1.0)
        self.child.close()
        try:  # results already computed are stored and acked, not handed back
            self._flush_acks(whole=True)
        except (redis.ConnectionError, redis.TimeoutError, Preempted):
            pass
        self._hand_back()
        self.batch.unlink(missing_ok=True)
        return 0

    def _flush_acks(self, whole: bool) -> None:
        key = self._seal(whole)
        if self.acks:
            self.rt.queue.ack_many(self.id, self.acks, key=key)
            acked = set(self.acks)
            self.held = [s for s in self.held if s not in acked]
            self.acks, self.acks_key = [], None

    def _seal(self, whole: bool) -> str | None:
        """Store the members waiting for their ack as one object in the bucket (write-ahead: before the
        ack); the key the ack of ``self.acks`` carries (None: nothing computed).

        ``whole``: the child is done with the object, which is sealed and moved as it is; else its
        members so far are copied into an object of their own (the child goes on appending). An ack
        that did not go out (the queue unreachable) is sent again with the key already stored: no
        subproblem is computed between the two, so there are no new members then."""
        if not self.members:
            return self.acks_key
        try:
            if whole:
                key = self._next_key()
                fd = os.open(self.batch, os.O_WRONLY)
                try:
                    pack.seal(fd, self.members)
                finally:
                    os.close(fd)
                self.rt.store.put_file(key, self.batch, move=True)
            else:
                key = self._store_copy(self.members)
        except OSError as exc:
            if not is_no_space(exc):
                raise
            self.log.error("no space left on the device (%s): the results of %d subproblem(s) could not be "
                           "stored; handing them and my other leases back without spending an attempt, and "
                           "exiting", exc.filename or exc, len(self.members))
            self.members, self.acks = [], []  # still held: handed back
            self.stop.set()
            raise Preempted from None
        self.members, self.acks_key = [], key
        return key

    def _next_key(self) -> str:
        self.seq += 1
        return pack.pack_key(self.id, self.tag, self.seq - 1)

    def _points(self, sub: int) -> tuple[int, int]:
        """(first point, number of points) of a chunk or of a point split off one."""
        return self.rt.spec.chunks[sub] if sub < self.base else (sub - self.base, 1)

    def _settle(self, sub: int, out: Outcome | ChunkFailed | OSError) -> None:
        """Store a computed subproblem's result and ack it (with the next claim), or record its failures."""
        if isinstance(out, OSError):  # the child could not write its result file
            self._out_of_space(sub, out)
            self._fail(sub, f"could not write the result: {out}")
            return
        if isinstance(out, ChunkFailed):
            self._fail(sub, out.reason)
            return
        try:
            self._store(sub, out)
        except OSError as exc:
            self._out_of_space(sub, exc)
            raise

    def _store(self, sub: int, out: Outcome) -> None:
        n = self._points(sub)[1]
        here = self.rt.spec.project_dir
        if not out.failed:
            self.members.append((sub, None, *out.member))  # type: ignore[misc]
            if not self.acks:
                self.acks_since = time.monotonic()
            self.acks.append(sub)  # acked with the next claim; held (heart-beaten) until then
            return
        if n == 1:  # a one-point subproblem: its point's attempt is the subproblem's
            (index, detail), = out.failed.items()
            self._record_failure(sub, index, self.rt.queue.attempts(sub) + 1, detail)
            self._fail(sub, f"point {index}: {summarize(detail, here)}")
            return
        for index, detail in out.failed.items():  # write-ahead: the failure objects before the ack
            self._record_failure(point_subproblem(index, self.base), index, 1, detail)
        key = self._store_copy([(sub, tuple(sorted(out.failed)), *out.member)])  # type: ignore[misc]
        spawned = self.rt.queue.ack_partial(self.id, sub, {i: f"point {i}: {summarize(d, here)}" for i, d in out.failed.items()},
                                              self.base, key=key)
        self.log.warning("subproblem %d: %d point(s) failed (%s), the others kept", sub, len(out.failed),
                         ", ".join(f"{p - self.base}: {o}" for p, o in spawned.items()) or "already acked")
        self.held.remove(sub)

    def _store_copy(self, members: list[tuple[int, tuple[int, ...] | None, int, int]]) -> str:
        """``members`` of the object being filled, copied into an object of their own and stored; its key
        (a partial result is acked alone and at once; a slow batch's acks cannot wait for its end)."""
        key = self._next_key()
        sealed = self.batch.with_name(f"sealed-{self.tag}.pack")
        pack.copy_sealed(self.batch, members, sealed)
        self.rt.store.put_file(key, sealed, move=True)
        return key

    def _fail(self, sub: int, reason: str) -> None:
        outcome = self.rt.queue.fail(self.id, sub, reason)
        self.log.warning("subproblem %d failed: %s (%s)", sub, reason.strip().splitlines()[-1][:200], outcome)
        self.held.remove(sub)

    def _out_of_space(self, sub: int, exc: OSError) -> None:
        """A full disk is nobody's point failing: hand every lease back (no attempt spent) and stop."""
        if not is_no_space(exc):
            return
        self.log.error("no space left on the device (%s): handing back subproblem %d and my other leases "
                       "without spending an attempt, and exiting", exc.filename or exc, sub)
        self.stop.set()
        raise Preempted from None

    def _hand_back(self) -> None:
        if self.held:
            requeued = self.rt.queue.preempt(self.id, self.held)
            self.log.info("preempted: handed back %d subproblem(s)", len(requeued))
            self.held = []

    def _record_failure(self, sub: int, index: int, attempt: int, detail: str) -> None:
        text = (f"worker: {self.id}\nsubproblem: {sub}\npoint index: {index}\n"
                f"point: {self.points[index].tolist()}\n\n{detail}")
        self.rt.store.put_bytes(failure_key(sub, attempt), text.encode())

    # -- liveness --------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """Extend held leases (a hung point is the compute child's watchdog's business, not this loop's)."""
        period = max(self.rt.spec.lease_seconds / 3, 0.05)
        while True:
            time.sleep(period)
            if self.notice is not None and not self.stop.is_set() and self.notice():
                self.log.warning("interruption notice: handing back leases and exiting")
                self.stop.set()
            try:
                self.rt.queue.heartbeat(self.id, list(self.held), self.rt.spec.lease_seconds)
            except (redis.ConnectionError, redis.TimeoutError):
                pass


def claim_limit(n_subproblems: int, workers: int) -> int:
    """Most subproblems one claim takes: MAX_BATCH, and never more than half a worker's share, so with
    two or more subproblems per worker no single claim leaves the workers still starting with nothing."""
    return max(1, min(MAX_BATCH, n_subproblems // (2 * max(1, workers))))


def _write_result(path: Path, data: np.ndarray, first: int, n: int) -> None:
    """The result file: dataset ``data`` plus attributes ``first_point`` and ``n_points``.

    Byte for byte what ``h5py.File(path, "w")`` + ``create_dataset("data", data=data)`` + two
    ``attrs`` assignments write (same property lists), through h5py's low-level API, which skips
    the high-level layer's per-call overhead (attributes written under a temporary name and
    renamed, property-list building): about 3× cheaper per file, which counts for small subproblems.
    Workers go through :class:`mcc.remote.results.ResultWriter`, which renders most files from a
    template this function's output has been checked against.
    """
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_EARLIEST, h5f.LIBVER_LATEST)
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fid = h5f.create(os.fsencode(path), h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    try:
        fill_result(fid, data, first, n)
    finally:
        fid.close()


def main(notice: Callable[[], bool] | None = None) -> int:
    rt = connect("worker")
    worker = Worker(rt, os.environ["MCC_WORKER_ID"], notice)
    OutputCap(lambda: worker.child.status[0])  # a chatty entry cannot fill the disk (the child's fds are these)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
