"""The worker: claim a subproblem, compute every point, write one result file, ack; repeat.

A result is written under a temporary name and moved to its deterministic key before the ack, so a
subproblem computed twice overwrites the same object and the combined file holds each point once.
SIGTERM (or a spot notice) → the leases still held go back to the front of the queue as a preemption.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import redis
from h5py import h5f, h5p

from mcc.project.folder import load_function, rows_from_result
from mcc.work.runspec import failure_key, result_key
from mcc.remote.results import ResultWriter, fill_result
from mcc.remote.runtime import Runtime, connect, setup_logging

WATCHDOG_GRACE = 15.0  # seconds past the point timeout before a hung worker kills itself
STDERR_TAIL = 20_000
BATCH_SECONDS = 0.1  # claim about this much work at a time (by the measured time per subproblem)...
MAX_BATCH = 64  # ...but never more subproblems than this in one claim
ACK_MAX_DELAY = 1.0  # seconds a computed subproblem may wait for the ack that goes with the next claim
IDLE_POLL_MAX = 0.2  # seconds between claims while the queue has nothing to lease
_SCALARS = frozenset({float, int, bool, np.float64, np.float32, np.int64, np.int32})


class PointFailed(Exception):
    """A point raised, exited non-zero or timed out; ``detail`` is what the user needs to see."""

    def __init__(self, index: int, point: list[float], detail: str) -> None:
        super().__init__(detail)
        self.index, self.point, self.detail = index, point, detail


class Preempted(Exception):
    """SIGTERM arrived: hand the remaining leases back."""


class PointTimeout(Exception):
    pass


class Worker:
    def __init__(self, rt: Runtime, worker_id: str, notice: Callable[[], bool] | None = None) -> None:
        self.rt, self.id = rt, worker_id
        self.notice = notice  # e.g. the spot interruption notice from IMDS: hand leases back when it comes
        self.log = setup_logging(worker_id)
        self.points = rt.points()
        self.held: list[int] = []
        self.stop = threading.Event()
        self.point_started: float | None = None
        self.current_sub: int | None = None
        spec = rt.spec
        if spec.project_dir not in sys.path:  # user code may import its siblings at call time
            sys.path.insert(0, spec.project_dir)
        self.fn = load_function(Path(spec.project_dir), spec.entry_target) if spec.entry_kind == "function" else None
        self.results = ResultWriter(_write_result)

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> int:
        """Claim a batch, compute it, and ack it together with the next claim (one round trip each).

        The batch is sized to about BATCH_SECONDS of this worker's measured work per subproblem, so
        tiny subproblems cost a fraction of a round trip each while slow ones are claimed one at a
        time (a batch never holds work another worker could have started long before).
        """
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGALRM, _raise_timeout)
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()
        self.acks: list[int] = []  # computed, result in the bucket, ack not yet sent (still held)
        self.acks_since = 0.0
        queue, spec = self.rt.queue, self.rt.spec
        idle_since, delay = time.monotonic(), 0.01
        per_sub: float | None = None  # moving average of seconds per subproblem
        while not self.stop.is_set():
            try:
                want = 1 if per_sub is None else max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(per_sub, 1e-6))))
                _, ids = queue.ack_and_claim(self.id, self.acks, want, spec.lease_seconds)
                self.acks = []
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
                for sub in ids:
                    self._do(sub)
                    if self.acks and time.monotonic() - self.acks_since > ACK_MAX_DELAY:
                        self._flush_acks()
                took = (time.monotonic() - started) / len(ids)
                per_sub = took if per_sub is None else 0.5 * per_sub + 0.5 * took
            except Preempted:
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - idle_since > spec.idle_exit_seconds:
                    self.log.error("queue unreachable for %.0f s (%s); exiting", spec.idle_exit_seconds, exc)
                    return 2
                self.stop.wait(1.0)
        try:  # results already in the bucket are acked, not handed back
            self._flush_acks()
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        self._hand_back()
        return 0

    def _flush_acks(self) -> None:
        if self.acks:
            self.rt.queue.ack_many(self.id, self.acks)
            acked = set(self.acks)
            self.held = [s for s in self.held if s not in acked]
            self.acks = []

    def _do(self, sub: int) -> None:
        if self.stop.is_set():
            raise Preempted
        self.current_sub = sub
        try:
            path = self._compute(sub)
        except PointFailed as exc:
            self._record_failure(sub, exc)
            outcome = self.rt.queue.fail(self.id, sub, f"point {exc.index}: {exc.detail[-500:]}")
            self.log.warning("subproblem %d failed at point %d (%s)", sub, exc.index, outcome)
            self.held.remove(sub)
        else:
            self.rt.store.put_file(result_key(sub), path, move=True)
            if not self.acks:
                self.acks_since = time.monotonic()
            self.acks.append(sub)  # acked with the next claim; held (heart-beaten) until then
        finally:
            self.current_sub = None

    def _hand_back(self) -> None:
        if self.held:
            requeued = self.rt.queue.preempt(self.id, self.held)
            self.log.info("preempted: handed back %d subproblem(s)", len(requeued))
            self.held = []

    # -- computing one subproblem ----------------------------------------------------------------
    def _compute(self, sub: int) -> Path:
        first, n = self.rt.spec.chunks[sub]
        part = self.rt.workdir / f"{sub:07d}.{os.getpid()}.h5.part"
        part.unlink(missing_ok=True)  # a retry always starts from a fresh file
        try:
            if self.fn is not None:
                self._compute_function(first, n, part)
            else:
                self._compute_script(first, n, part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part

    def _compute_function(self, first: int, n: int, part: Path) -> None:
        """Call the entry on each point in-process; write the rows as the subproblem's result file.

        The point timeout is one interval timer per subproblem, re-armed only when it fires during
        a point that has not yet run for ``point_timeout`` (not two setitimer calls per point).
        Flat rows (a list or tuple of numbers) are kept as tuples and converted to one array at the
        end; anything else is checked and converted at once, so a bad return value still fails
        its own point.
        """
        timeout = self.rt.spec.point_timeout
        target = self.rt.spec.entry_target
        fn, stop, clock = self.fn, self.stop, time.monotonic
        points = self.points[first : first + n].tolist()
        rows: list[Any] = []
        current: list[float | None] = [None]  # start of the point being computed

        def on_alarm(signum: int, frame: object) -> None:
            begun = current[0]
            left = timeout if begun is None else begun + timeout - clock()
            if left <= 0:
                raise PointTimeout
            signal.setitimer(signal.ITIMER_REAL, left)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            for k, point in enumerate(points):
                if stop.is_set():
                    raise Preempted
                current[0] = self.point_started = clock()
                try:
                    result = fn(point)  # type: ignore[misc]
                except PointTimeout:
                    raise PointFailed(first + k, point, f"timed out after {timeout:g} s") from None
                except Exception:
                    raise PointFailed(first + k, point, traceback.format_exc()) from None
                finally:
                    current[0] = None
                kind = type(result)
                if (kind is list or kind is tuple) and result and type(result[0]) in _SCALARS:
                    rows.append(tuple(result))  # a flat row: a snapshot, in case the entry reuses its list
                else:
                    try:
                        rows.append(rows_from_result(result, first + k, target))
                    except Exception as exc:
                        raise PointFailed(first + k, point, str(exc)) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self.point_started = None
        self.results.write(part, _stack_rows(rows, first, points, target), first, n)

    def _compute_script(self, first: int, n: int, part: Path) -> None:
        spec = self.rt.spec
        script = str(Path(spec.project_dir) / spec.entry_target)
        for index in range(first, first + n):
            if self.stop.is_set():
                raise Preempted
            point = self.points[index].tolist()
            argv = [sys.executable, script, str(part), *map(repr, point)]
            self.point_started = time.monotonic()
            try:
                proc = subprocess.run(
                    argv, cwd=spec.project_dir, capture_output=True, timeout=spec.point_timeout,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired as exc:
                tail = (exc.stderr or b"").decode(errors="replace")[-STDERR_TAIL:]
                raise PointFailed(index, point, f"timed out after {spec.point_timeout:g} s\n{tail}") from None
            finally:
                self.point_started = None
            if proc.returncode != 0:
                stderr = proc.stderr.decode(errors="replace")[-STDERR_TAIL:]
                raise PointFailed(index, point, f"exit status {proc.returncode}\n{stderr}")
        try:
            with h5py.File(part, "r") as fh:
                fh["data"]
        except (OSError, KeyError):
            raise PointFailed(first, self.points[first].tolist(), f"{spec.entry_target} wrote no `data` dataset to OUTFILE") from None

    def _record_failure(self, sub: int, exc: PointFailed) -> None:
        attempt = self.rt.queue.attempts(sub) + 1
        text = f"worker: {self.id}\nsubproblem: {sub}\npoint index: {exc.index}\npoint: {exc.point}\n\n{exc.detail}"
        self.rt.store.put_bytes(failure_key(sub, attempt), text.encode())

    # -- liveness --------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """Extend held leases; kill this process if a point hangs past its timeout (C code ignores SIGALRM)."""
        period = max(self.rt.spec.lease_seconds / 3, 0.05)
        limit = self.rt.spec.point_timeout + WATCHDOG_GRACE
        while True:
            time.sleep(period)
            started, sub = self.point_started, self.current_sub
            if started is not None and sub is not None and time.monotonic() - started > limit:
                self.log.error("point hung past %.0f s; failing subproblem %d and exiting", limit, sub)
                try:
                    self.rt.queue.fail(self.id, sub, f"hung past the {self.rt.spec.point_timeout:g} s point timeout")
                finally:
                    os._exit(75)
            if self.notice is not None and not self.stop.is_set() and self.notice():
                self.log.warning("interruption notice: handing back leases and exiting")
                self.stop.set()
            try:
                self.rt.queue.heartbeat(self.id, list(self.held), self.rt.spec.lease_seconds)
            except (redis.ConnectionError, redis.TimeoutError):
                pass


def _stack_rows(rows: list[Any], first: int, points: list[list[float]], target: str) -> np.ndarray:
    """The rows of a subproblem as one float64 array: flat tuples in one conversion, else row by row
    (with the error of the first bad point, as rows_from_result words it)."""
    if rows and all(type(r) is tuple for r in rows):
        try:
            data = np.asarray(rows)
        except (ValueError, TypeError):
            data = None
        if data is not None and data.ndim == 2 and data.shape[1] > 0 and data.dtype.kind in "biuf":
            return np.ascontiguousarray(data, dtype=np.float64)
    arrays = []
    for k, row in enumerate(rows):
        try:
            arrays.append(row if isinstance(row, np.ndarray) else rows_from_result(row, first + k, target))
        except Exception as exc:
            raise PointFailed(first + k, points[k], str(exc)) from None
    try:
        return np.vstack(arrays)
    except ValueError as exc:
        raise PointFailed(first, points[0], f"rows of different widths: {exc}") from None


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


def _raise_timeout(signum: int, frame: object) -> None:
    raise PointTimeout


def main(notice: Callable[[], bool] | None = None) -> int:
    rt = connect("worker")
    return Worker(rt, os.environ["MCC_WORKER_ID"], notice).run()


if __name__ == "__main__":
    sys.exit(main())
