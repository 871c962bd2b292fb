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
from typing import Callable

import h5py
import numpy as np
import redis

from mcc.project import load_function, rows_from_result
from mcc.runspec import failure_key, result_key
from mcc.remote.runtime import Runtime, connect, setup_logging

WATCHDOG_GRACE = 15.0  # seconds past the point timeout before a hung worker kills itself
STDERR_TAIL = 20_000


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

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGALRM, _raise_timeout)
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()
        idle_since, delay = time.monotonic(), 0.01
        while not self.stop.is_set():
            try:
                ids = self.rt.queue.claim(self.id, 1, self.rt.spec.lease_seconds)
                if not ids:
                    if self.rt.queue.progress().finished:
                        self.log.info("queue finished; exiting")
                        return 0
                    if time.monotonic() - idle_since > self.rt.spec.idle_exit_seconds:
                        self.log.info("idle for %.0f s; exiting", self.rt.spec.idle_exit_seconds)
                        return 0
                    self.stop.wait(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                idle_since, delay = time.monotonic(), 0.01
                self.held = list(ids)
                for sub in ids:
                    self._do(sub)
            except Preempted:
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - idle_since > self.rt.spec.idle_exit_seconds:
                    self.log.error("queue unreachable for %.0f s (%s); exiting", self.rt.spec.idle_exit_seconds, exc)
                    return 2
                self.stop.wait(1.0)
        self._hand_back()
        return 0

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
        else:
            self.rt.store.put_file(result_key(sub), path, move=True)
            self.rt.queue.ack(self.id, sub)
        finally:
            self.current_sub = None
        self.held.remove(sub)  # not reached on Preempted: the lease is handed back instead

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
        rows = []
        timeout = self.rt.spec.point_timeout
        for index in range(first, first + n):
            if self.stop.is_set():
                raise Preempted
            point = self.points[index].tolist()
            self.point_started = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                result = self.fn(point)  # type: ignore[misc]
            except PointTimeout:
                raise PointFailed(index, point, f"timed out after {timeout:g} s") from None
            except Exception:
                raise PointFailed(index, point, traceback.format_exc()) from None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self.point_started = None
            try:
                rows.append(rows_from_result(result, index, self.rt.spec.entry_target))
            except Exception as exc:
                raise PointFailed(index, point, str(exc)) from None
        try:
            data = np.vstack(rows)
        except ValueError as exc:
            raise PointFailed(first, self.points[first].tolist(), f"rows of different widths: {exc}") from None
        with h5py.File(part, "w") as fh:
            fh.create_dataset("data", data=data)
            fh.attrs["first_point"], fh.attrs["n_points"] = first, n

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


def _raise_timeout(signum: int, frame: object) -> None:
    raise PointTimeout


def main(notice: Callable[[], bool] | None = None) -> int:
    rt = connect("worker")
    return Worker(rt, os.environ["MCC_WORKER_ID"], notice).run()


if __name__ == "__main__":
    sys.exit(main())
