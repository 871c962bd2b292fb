"""The worker's compute child: the entry runs in a process the worker forks once, and again only after a crash.

A point that raises fails only itself: the child records it and goes on with the next point. A
point that kills the process (SIGSEGV in a C extension, ``os._exit``, the OOM killer, a hang the
watchdog ends) kills only the child: the parent — which holds the leases, heartbeats and talks to
the queue — learns from the shared status word which point was running, records that point's
death from the wait status, forks a fresh child (from its own pristine memory: the entry is
already imported) and goes on with the rest of the subproblem. Nothing is spawned per point.

The parent hands the child a whole claimed batch in one message; the child sends each subproblem's
outcome as it finishes and goes on with the next (no round trip per subproblem). Within a
subproblem it streams what it has finished about once a second (``FLUSH_SECONDS``), so a crash
costs at most that much recomputation and a tiny subproblem never pays for a message per point.
Per point the child does one store into shared memory (the running point's index) on top of the
entry call itself.
"""
from __future__ import annotations

import mmap
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from mcc.project.folder import rows_from_result
from mcc.remote.results import ResultWriter, add_row_counts, mark_partial, rows_in, stack_rows, write_partial
from mcc.work import pack
from mcc.work.points_file import PointsFile

STDERR_TAIL = 20_000
FLUSH_SECONDS = 1.0  # the child sends its finished rows to the parent at most this often
GROUP_SECONDS = 0.05  # outcomes of subproblems finished within this long of each other go in one message
WATCHDOG_GRACE = 15.0  # seconds past point_timeout before a point that ignores SIGALRM is killed
_SCALARS = frozenset({float, int, bool, np.float64, np.float32, np.int64, np.int32})
_IDLE = -1  # status word: no subproblem
_BUSY = -2  # status word: a subproblem taken, between points


class Preempted(Exception):
    """SIGTERM (or a spot notice) arrived: hand the remaining leases back."""


class ChunkFailed(Exception):
    """The subproblem as a whole failed (not one point): its rows cannot be put together, or the
    child died between points. ``reason`` names the point where there is one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PointTimeout(Exception):
    pass


class _Lost(Exception):
    """The child died before it took the subproblem (killed while idle): fork another, blame nothing."""


@dataclass
class Carry:
    """What is already known of a subproblem being computed: points before ``next`` are finished
    (their ``rows``; a script entry streams nothing and starts its file over), ``failed`` maps
    point index to what went wrong (points in it are never computed again by this attempt)."""

    next: int = 0
    rows: list[Any] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """A computed subproblem: where its result file (rows of every point but ``failed``) is in the
    batch object, as (offset, size), or None when no point succeeded in a one-point subproblem;
    ``failed`` maps point index to its error."""

    member: tuple[int, int] | None
    failed: dict[int, str]


def death_reason(status: int, watchdog: float | None, oom_before: int | None) -> str:
    """What killed the child, from its wait status, in the words ``mcc status`` shows.

    ``watchdog`` is the limit if the parent's watchdog sent the kill; ``oom_before`` the cgroup's
    ``oom_kill`` count before the subproblem started (None where it cannot be read).
    """
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)} without returning"
    sig = os.WTERMSIG(status)
    if watchdog is not None:
        return f"killed after point_timeout (watchdog): still running {watchdog:g} s after it started"
    if sig == signal.SIGKILL:
        after = oom_kills()
        if oom_before is not None and after is not None and after == oom_before:
            return "killed by SIGKILL (not the out-of-memory killer: the cgroup's oom_kill count did not change)"
        return "out of memory (SIGKILL)"
    try:
        return f"killed by {signal.Signals(sig).name}"
    except ValueError:
        return f"killed by signal {sig}"


def oom_kills() -> int | None:
    """The OOM killer's kill count in this process's cgroup (v2 ``memory.events``), if readable."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("\n")[0].split(":", 2)[2]
        for line in (Path("/sys/fs/cgroup") / rel.lstrip("/") / "memory.events").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, IndexError, ValueError):
        return None
    return None


class ComputeChild:
    """The parent's handle on its compute child (``run`` is called from the worker's main thread)."""

    def __init__(self, spec: Any, points: PointsFile, fn: Callable[[Any], Any] | None, workdir: Path,
                 writer: ResultWriter, stop: threading.Event) -> None:
        self.spec, self.points, self.fn, self.workdir = spec, points, fn, workdir
        self.writer, self.stop = writer, stop
        # [the running point's index, or _IDLE/_BUSY; the subproblem being computed, or -1]
        self.status = memoryview(mmap.mmap(-1, 16)).cast("q")
        self.status[0], self.status[1] = _IDLE, -1
        self.pid: int | None = None
        self.conn: Connection | None = None
        timeout = spec.point_timeout  # None: no limit, no watchdog (a silent worker still loses its lease)
        self.limit = None if not timeout else timeout + min(WATCHDOG_GRACE, timeout)
        self.forks = 0

    # -- parent side ---------------------------------------------------------------------------
    def run(self, tasks: list[tuple[int, int, int]],
            batch: Path) -> Iterator[tuple[int, Outcome | ChunkFailed | OSError]]:
        """Compute each ``(sub, first point, n points)`` in the child, in order; yield each subproblem's
        outcome as soon as the child has it (the child goes on with the next meanwhile: a batch costs
        one message to the child, not a round trip per subproblem). The child appends each result
        file to the batch object at ``batch`` (unsealed; see :mod:`mcc.work.pack`).

        After a crash the fresh child gets the rest of the batch, the crashed subproblem first,
        resumed from what it had streamed, without its crashed point. Raises ``Preempted`` when the
        stop event is set (the child is killed; what was not yielded is the caller's to hand back).
        """
        todo = list(tasks)
        try:
            yield from self._run(todo, str(batch))
        finally:
            if todo:  # left early (the caller raised, or Preempted): the child's messages are stale now
                self.close()

    def _run(self, todo: list[tuple[int, int, int]], batch: str) -> Iterator[tuple[int, Outcome | ChunkFailed]]:
        carries: dict[int, Carry] = {}
        lost = 0  # children that died before taking a subproblem (not its fault, unless it keeps happening)
        while todo:
            if self.pid is None:
                self._fork()
            assert self.conn is not None
            oom_before = oom_kills()
            try:
                try:
                    self.conn.send((batch, [(sub, first, n, carries.get(sub)) for sub, first, n in todo]))
                except OSError:  # it died while idle and its end of the pipe is closed
                    raise _Lost(death_reason(self._reap(), None, oom_before)) from None
                yield from self._receive(todo, carries, oom_before)
            except _Lost as exc:
                lost += 1
                if lost >= 3:
                    sub = todo.pop(0)[0]
                    lost = 0
                    yield sub, ChunkFailed(f"the compute process {exc} before it could start")

    def _receive(self, todo: list[tuple[int, int, int]], carries: dict[int, Carry],
                 oom_before: int | None) -> Iterator[tuple[int, Outcome | ChunkFailed]]:
        """Yield outcomes until ``todo`` is empty; after a crash, record it and return (or raise ``_Lost``)."""
        conn, status, clock = self.conn, self.status, time.monotonic
        assert conn is not None
        period = 0.5 if self.limit is None else min(0.5, max(self.limit / 4, 0.02))
        seen, since, watchdog = _IDLE, clock(), None
        inbox: deque[Any] = deque()  # messages the child sent together, not yet handled
        while todo:
            if inbox:
                msg = inbox.popleft()
            else:
                try:
                    msg = conn.recv() if conn.poll(period) else None
                except (EOFError, OSError):
                    break  # the child died (only ever with the inbox empty: what it sent is handled first)
                if msg is not None and msg[0] == "many":
                    inbox.extend(msg[1])
                    msg = inbox.popleft()
            if self.stop.is_set():
                self.close()
                raise Preempted
            if msg is not None:
                kind, sub = msg[0], msg[1]
                if kind == "progress":
                    carry = carries.setdefault(sub, Carry())
                    carry.next = msg[2]
                    carry.rows += msg[3]
                    carry.failed.update(msg[4])
                    continue
                todo.pop(0)  # the child works in order: this is the first one
                carries.pop(sub, None)
                seen = _IDLE
                if kind == "done":
                    yield sub, Outcome(msg[2], msg[3])
                elif kind == "oserror":
                    yield sub, OSError(msg[2], os.strerror(msg[2]), msg[3])
                else:
                    yield sub, ChunkFailed(msg[2])
                if self.stop.is_set():
                    self.close()
                    raise Preempted
                continue
            now, running = clock(), status[0]
            if running != seen:
                seen, since = running, now
            elif running >= 0 and self.limit is not None and now - since > self.limit and watchdog is None:
                watchdog = self.limit
                os.kill(self.pid, signal.SIGKILL)  # type: ignore[arg-type]
        else:
            return
        running, current = int(status[0]), int(status[1])
        wait_status = self._reap()
        if self.stop.is_set():
            raise Preempted
        reason = death_reason(wait_status, watchdog, oom_before)
        if running == _IDLE:
            raise _Lost(reason)
        # the subproblem it died in; those before it in todo were finished, but their outcomes were still
        # waiting to be sent (_Outbox): the next child computes them again
        at = next((k for k, task in enumerate(todo) if task[0] == current), 0)
        sub, first, n = todo[at]
        if not first <= running < first + n:
            todo.pop(at)
            carries.pop(sub, None)
            yield sub, ChunkFailed(f"the compute process {reason} between points")
            return
        carries.setdefault(sub, Carry()).failed[running] = reason

    def _reap(self) -> int:
        assert self.pid is not None
        _, wait_status = os.waitpid(self.pid, 0)
        self.pid = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.status[0], self.status[1] = _IDLE, -1
        return wait_status

    def close(self) -> None:
        """Stop the child (at once: whatever it was computing is handed back, not failed)."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()

    def start(self) -> None:
        """Fork the compute child (``run`` forks one itself when there is none)."""
        if self.pid is None:
            self._fork()

    def _fork(self) -> None:
        parent_end, child_end = Pipe(duplex=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                parent_end.close()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                    signal.signal(sig, signal.SIG_DFL)  # nothing of the parent's handlers
                try:  # if memory runs out, the kernel should take the child, not the lease holder
                    Path("/proc/self/oom_score_adj").write_text("1000")
                except OSError:
                    pass
                _die_with_parent()
                self._serve(child_end)
            except BaseException:
                traceback.print_exc()
                code = 70
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        child_end.close()
        self.pid, self.conn = pid, parent_end
        self.forks += 1

    # -- child side ----------------------------------------------------------------------------
    def _serve(self, conn: Connection) -> None:
        while True:
            try:
                path, batch = conn.recv()
            except EOFError:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)  # a child before this one may have begun it
            out = _Outbox(conn)
            try:
                for sub, first, n, carry in batch:
                    self.status[0], self.status[1] = _BUSY, sub
                    try:
                        if self.fn is not None:
                            outcome = self._function_points(out, sub, first, n, carry or Carry(), fd)
                        else:
                            outcome = self._script_points(out, sub, first, n, carry or Carry(), fd)
                    except ChunkFailed as exc:
                        out.send(("chunk_failed", sub, exc.reason))
                    except OSError as exc:  # writing the result (a full disk): the parent decides
                        out.send(("oserror", sub, exc.errno or 0, exc.filename or path))
                    else:
                        out.post(("done", sub, outcome.member, outcome.failed))
                    self.status[0] = _IDLE
            finally:
                out.close()
                os.close(fd)

    def _part(self, sub: int) -> Path:
        return self.workdir / f"{sub:07d}.{os.getpid()}.h5.part"

    def _function_points(self, out: "_Outbox", sub: int, first: int, n: int, carry: Carry, fd: int) -> Outcome:
        """Call the entry on each point; a point that raises, times out or returns something that is
        not rows fails alone. The point timeout is one interval timer per subproblem, re-armed only
        when it fires during a point that has not yet run for ``point_timeout``. Flat rows (a list or
        tuple of numbers) are kept as tuples and converted to one array at the end."""
        timeout, target = self.spec.point_timeout, self.spec.entry_target
        fn, status, clock, send = self.fn, self.status, time.monotonic, out.send
        points = self.points[first : first + n].tolist()
        rows, failed = list(carry.rows), dict(carry.failed)
        sent_rows, sent_failed = len(rows), set(failed)
        current: list[float | None] = [None]  # start of the point being computed
        flushed = clock()

        def on_alarm(signum: int, frame: object) -> None:
            begun = current[0]
            left = timeout if begun is None else begun + timeout - clock()
            if left <= 0:
                raise PointTimeout
            signal.setitimer(signal.ITIMER_REAL, left)

        previous = signal.signal(signal.SIGALRM, on_alarm) if timeout else None
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            for k in range(carry.next, n):
                index = first + k
                if failed and index in failed:
                    continue
                status[0] = index
                current[0] = started = clock()
                try:
                    result = fn(points[k])  # type: ignore[misc]
                except PointTimeout:
                    failed[index] = f"timed out after {timeout:g} s"
                    continue
                except Exception:
                    failed[index] = traceback.format_exc()
                    continue
                finally:
                    current[0] = None
                kind = type(result)
                if (kind is list or kind is tuple) and result and type(result[0]) in _SCALARS:
                    rows.append(tuple(result))  # a flat row: a snapshot, in case the entry reuses its list
                else:
                    try:
                        rows.append(rows_from_result(result, index, target))
                    except Exception as exc:
                        failed[index] = str(exc)
                        continue
                if started - flushed > FLUSH_SECONDS:
                    send(("progress", sub, k + 1, rows[sent_rows:],
                          {i: e for i, e in failed.items() if i not in sent_failed}))
                    sent_rows, sent_failed, flushed = len(rows), set(failed), clock()
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            status[0] = _BUSY
        if failed and n == 1:
            return Outcome(None, failed)
        kept = [i for i in range(first, first + n) if i not in failed]
        try:
            data = stack_rows(rows, kept, target) if rows else None
        except ValueError as exc:
            raise ChunkFailed(str(exc)) from None
        counts = [1 if type(r) is tuple else len(r) for r in rows]
        if not failed and len(set(counts)) <= 1:  # the common case: no file of its own
            return Outcome(self.writer.append(fd, data, first, n, lambda: self._part(sub)), failed)  # type: ignore[arg-type]
        part = self._part(sub)
        if not failed:
            self.writer.write(part, data, first, n)  # type: ignore[arg-type]
            add_row_counts(part, counts)
        else:
            write_partial(part, data, first, n, sorted(failed), counts)
        return Outcome(pack.append_file(fd, part), failed)

    def _script_points(self, out: "_Outbox", sub: int, first: int, n: int, carry: Carry, fd: int) -> Outcome:
        """Run the script once per point, appending to one file. A point that fails (non-zero exit,
        killed, timed out) fails alone: the file is put back as it was before that point."""
        spec = self.spec
        script = str(Path(spec.project_dir) / spec.entry_target)
        part, backup = self._part(sub), self._part(sub).with_suffix(".before")
        part.unlink(missing_ok=True)  # an attempt always starts its file from scratch
        failed, counts = dict(carry.failed), []
        for index in range(first, first + n):
            if index in failed:
                continue
            point = self.points[index].tolist()
            self.status[0] = index
            before = rows_in(part)
            if before is not None:
                shutil.copyfile(part, backup)
            argv = [sys.executable, script, str(part), *map(repr, point)]
            error = None
            try:
                proc = subprocess.run(argv, cwd=spec.project_dir, capture_output=True, timeout=spec.point_timeout,
                                      start_new_session=True)
            except subprocess.TimeoutExpired as exc:
                tail = (exc.stderr or b"").decode(errors="replace")[-STDERR_TAIL:]
                error = f"timed out after {spec.point_timeout:g} s\n{tail}"
            else:
                if proc.returncode != 0:
                    stderr = proc.stderr.decode(errors="replace")[-STDERR_TAIL:]
                    code = proc.returncode
                    how = f"killed by {_signame(-code)}" if code < 0 else f"exit status {code}"
                    error = f"{how}\n{stderr}"
            after = rows_in(part) if error is None else None
            if error is None and after is None:
                error = f"{spec.entry_target} wrote no `data` dataset to OUTFILE"
            if error is not None:
                failed[index] = error
                if before is None:
                    part.unlink(missing_ok=True)
                else:
                    os.replace(backup, part)
                continue
            counts.append(after - (before or 0))  # type: ignore[operator]
        self.status[0] = _BUSY
        backup.unlink(missing_ok=True)
        if failed and n == 1:
            part.unlink(missing_ok=True)
            return Outcome(None, failed)
        if failed:
            if not part.exists():
                write_partial(part, None, first, n, sorted(failed), [])
            else:
                with h5py.File(part, "a") as fh:
                    mark_partial(fh, first, n, sorted(failed), counts)
        elif part.exists():
            add_row_counts(part, counts)
        return Outcome(pack.append_file(fd, part) if part.exists() else None, failed)


class _Outbox:
    """The child's messages to the parent: outcomes of quick subproblems go together (a message per
    one-point subproblem cost as much as computing it), none waiting longer than ``GROUP_SECONDS``
    (a thread of the child sends what a long point would keep waiting); anything else goes at once,
    after what is waiting (the parent takes outcomes in order)."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.waiting, self.oldest = conn, [], 0.0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._sender, daemon=True).start()

    def post(self, msg: Any) -> None:
        with self.lock:
            if not self.waiting:
                self.oldest = time.monotonic()
            self.waiting.append(msg)

    def send(self, msg: Any) -> None:
        with self.lock:
            self.waiting.append(msg)
            self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def close(self) -> None:
        self.flush()
        self.closed.set()

    def _flush(self) -> None:
        if self.waiting:
            self.conn.send(self.waiting[0] if len(self.waiting) == 1 else ("many", self.waiting))
            self.waiting = []

    def _sender(self) -> None:
        while not self.closed.wait(GROUP_SECONDS / 2):
            with self.lock:
                if self.waiting and time.monotonic() - self.oldest >= GROUP_SECONDS:
                    self._flush()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the worker that forked it dies (no orphan computing on)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
