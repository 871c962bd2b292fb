"""What the benchmarks share: a real password-protected redis-server per benchmark, a run's bucket
and spec laid out exactly as the manager lays them, real worker processes, and the queue's events.

Every process started here carries this invocation's tag (``mcc:ledger`` = ``BENCH_UUID``) in its
environment, so :func:`stop_everything` ends exactly the processes the suite started, by identity.
"""
from __future__ import annotations

import atexit
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import redis

from mcc.providers.base import TAG_LEDGER, TAG_NAME
from mcc.providers.local import processes
from mcc.providers.local.cache import new_password, start_redis
from mcc.work.queue import Queue
from mcc.work.runspec import POINTS, SPEC, RunSpec, make_chunks
from mcc.work.stores import LocalStore

REPO = Path(__file__).resolve().parents[1]
BENCH_UUID = f"bench-{uuid.uuid4().hex[:12]}"

NOOP_ENTRY = "def compute(point):\n    return point\n"
BIG_ROWS_ENTRY = "import numpy as np\n\ndef compute(point):\n    return np.full((5, 4096), point[0])\n"
SPIN_ENTRY = textwrap.dedent("""
    import time

    def compute(point):
        # {ms} ms of CPU time in this thread, then the point back as its row
        end = time.thread_time() + {seconds}
        while time.thread_time() < end:
            pass
        return point
""")


def tags(name: str) -> dict[str, str]:
    return {TAG_LEDGER: BENCH_UUID, TAG_NAME: name}


def stop_everything() -> None:
    """Terminate every process this invocation started (found by its tag), then reap them."""
    for proc in processes.find_tagged({TAG_LEDGER: BENCH_UUID}):
        try:
            processes.terminate(proc, grace=3.0)
        except OSError:
            pass


atexit.register(stop_everything)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def bench_tmp() -> Path:
    """Where benchmarks put buckets and ledgers: ``$MCC_BENCH_TMP``, else ``~/.cache/mcc-bench``.

    Not /tmp: a run's bucket lives in ``$MCC_HOME`` (default ``~/.mcc``), and on the machine this
    suite was written on, creating a file anywhere under /tmp costs ~1 ms against ~0.05 ms under
    the home directory (see bench/README.md), which would charge mcc for a quirk of /tmp.
    """
    path = Path(os.environ.get("MCC_BENCH_TMP") or Path.home() / ".cache" / "mcc-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def tempdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"mcc-{prefix}-", dir=bench_tmp()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class RedisServer:
    """A redis-server started the way the local backend starts it (random password, loopback)."""

    proc: processes.ProcessId
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.port, password=self.password, **kw)

    def info(self) -> dict[str, Any]:
        return self.client().info()


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    password = new_password()
    proc, port = start_redis(password, workdir / "redis", tags("redis"), workdir / "redis.log")
    try:
        yield RedisServer(proc, port, password)
    finally:
        processes.terminate(proc, grace=3.0)


def write_project(path: Path, entry_source: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "entry.py").write_text(entry_source)
    return path


@dataclass
class LocalRun:
    """A run's bucket, spec, points and queue, as the manager lays them out, without the manager."""

    root: Path
    server: RedisServer
    spec: RunSpec
    store: LocalStore
    queue: Queue
    workers: dict[str, processes.ProcessId] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, server: RedisServer, project: Path, points: np.ndarray, chunk: int,
               *, workers: int = 2, lease_seconds: float = 30.0, max_attempts: int = 3,
               entry: str = "entry:compute") -> "LocalRun":
        run_id = f"b-{uuid.uuid4().hex[:8]}"
        spec = RunSpec(
            run_id=run_id, ledger_uuid=BENCH_UUID, n_points=len(points), chunks=make_chunks(len(points), chunk),
            entry_kind="function", entry_target=entry, project_dir=str(project), workers=workers,
            max_attempts=max_attempts, point_timeout=600.0, lease_seconds=lease_seconds, has_combiner=False,
        )
        store = LocalStore(root / "bucket")
        store.put_bytes(SPEC, spec.to_json())
        tmp = root / "points.npy"
        np.save(tmp, np.ascontiguousarray(points, dtype=np.float64), allow_pickle=False)
        store.put_file(POINTS, tmp, move=True)
        client = server.client()
        return cls(root, server, spec, store, Queue(client, run_id))

    def env(self) -> dict[str, str]:
        return {"MCC_STORE": self.store.url, "MCC_REDIS_URL": self.server.url, "MCC_RUN_ID": self.spec.run_id}

    def spawn_workers(self, n: int) -> list[str]:
        """Start ``n`` real worker processes (``python -m mcc.remote.worker``), as LocalFleet does."""
        ids = []
        for _ in range(n):
            wid = f"w-{len(self.workers) + 1:04d}"
            self.workers[wid] = processes.spawn(
                [sys.executable, "-m", "mcc.remote.worker"], tags=tags(wid),
                env={**self.env(), "MCC_WORKER_ID": wid, "MCC_WORKDIR": str(self.root / "work" / wid)},
                cwd=self.spec.project_dir, log_path=self.root / "logs" / f"{wid}.log",
            )
            ids.append(wid)
        return ids

    def wait_workers_polling(self, timeout: float = 60.0) -> None:
        """Until every worker has made its first claim (imports done, entry loaded, polling)."""
        wait_until(lambda: set(self.workers) <= set(self.queue.worker_heartbeats()) or self._dead_worker(),
                   timeout, "the workers to start")
        self._dead_worker(raise_=True)

    def _dead_worker(self, raise_: bool = False) -> bool:
        dead = [w for w, p in self.workers.items() if not processes.is_alive(p)]
        if dead and raise_:
            log = (self.root / "logs" / f"{dead[0]}.log")
            raise RuntimeError(f"worker {dead[0]} exited early:\n{log.read_text()[-3000:] if log.exists() else ''}")
        return bool(dead)

    def seed(self) -> None:
        assert self.queue.seed([n for _, n in self.spec.chunks], self.spec.max_attempts)

    def wait_finished(self, timeout: float) -> None:
        def done() -> bool:
            if self.queue.progress().finished:
                return True
            if all(not processes.is_alive(p) for p in self.workers.values()):
                raise RuntimeError("every worker exited before the queue finished:\n" + self.logs_tail())
            return False
        wait_until(done, timeout, "the queue to finish", interval=0.01)

    def stop_workers(self, grace: float = 10.0) -> None:
        for proc in self.workers.values():
            processes.terminate(proc, grace=grace)

    def logs_tail(self, chars: int = 2000) -> str:
        out = []
        for log in sorted((self.root / "logs").glob("*.log")):
            out.append(f"--- {log.name}\n{log.read_text()[-chars:]}")
        return "\n".join(out)

    def events(self) -> list[dict[str, str]]:
        return read_all_events(self.queue)


def read_all_events(queue: Queue) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    cursor = "0-0"
    while True:
        batch = queue.read_events(cursor, 50_000)
        if not batch:
            return out
        out.extend(fields for _, fields in batch)
        cursor = batch[-1][0]


@dataclass
class Window:
    """First claim → last ack, in Redis server time, from the queue's own events."""

    first_claim: float
    last_ack: float
    claims: int
    acks: int
    first_claim_by_worker: dict[str, float]

    @property
    def seconds(self) -> float:
        return self.last_ack - self.first_claim

    @property
    def stagger(self) -> float:
        """Seconds between the first and the last worker's first claim."""
        t = list(self.first_claim_by_worker.values())
        return max(t) - min(t) if t else 0.0


def window(events: Sequence[dict[str, str]]) -> Window:
    claims = [e for e in events if e["type"] == "claimed"]
    acks = [e for e in events if e["type"] == "acked"]
    first: dict[str, float] = {}
    for e in claims:
        first.setdefault(e["worker"], float(e["t"]))
    return Window(min(float(e["t"]) for e in claims), max(float(e["t"]) for e in acks), len(claims), len(acks),
                  first)


def file_create_us(n: int = 300) -> float:
    """Mean µs to create, write (2 KB) and close a new file where the benchmarks keep their buckets:
    the floor under one result file per subproblem, measured in the same run."""
    with tempdir("fs") as root:
        t0 = time.perf_counter()
        for i in range(n):
            with open(root / f"{i}.bin", "wb") as fh:
                fh.write(b"x" * 2048)
        return (time.perf_counter() - t0) / n * 1e6


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def env_with_repo() -> dict[str, str]:
    """The environment for child processes that import ``bench`` (RQ workers, B8 workers)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}
