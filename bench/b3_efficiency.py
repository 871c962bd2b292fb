"""B3 — efficiency on real-sized work: N points × 20 ms of CPU each, 2 workers, a whole `mcc run`.

mcc: ``python -m mcc.cli run PROJECT --json`` (a fresh ``MCC_HOME``; automatic chunk size; the
real ledger, redis-server, manager, workers, journal, combine and teardown). The compared figure
is the compute phase, first claim → last ack, from the run's journal in its bucket (Redis server
time); the fixed start-up (command start → first claim: probe, ledger, redis-server, manager and
worker processes) and the finish (last ack → command exit: combine, collect, teardown) are
reported separately.

Baseline in the same run: ``multiprocessing.Pool(2).map`` of the same function over the same
points (pool started beforehand; its start-up reported too): the first half of the points right
before the mcc run and the second half right after it, the two times added (the machine is shared:
bracketing mcc this way cancels a steady drift in the load).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bench import Context, Row, fmt_ratio, fmt_s, workloads
from bench.b1_dispatch import pool_map
from bench.harness import SPIN_ENTRY, tempdir

ID = "B3"
TITLE = "efficiency on real-sized work: 20 ms CPU points, 2 workers, whole `mcc run`"
DEFAULT_SIZE = 2_000
SMOKE_SIZE = 100  # python -m bench --smoke: does it run here (figures not comparable)
SECONDS_PER_POINT = 0.02

TICKS = os.sysconf("SC_CLK_TCK")
POINTS_PY = "def get_points():\n    return [[float(i), i * 0.5, 0.0] for i in range({n})]\n"


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of a process tree, sampled every 0.2 s from /proc: which part of
    the machine mcc's own processes (``mcc run``, manager, redis-server) take from the workers.

    The tree is the command's descendants and every process whose environment has ``MCC_HOME=home``:
    the local fleet starts its workers in sessions of their own, reparented away from the manager."""

    def __init__(self, root_pid: int, home: Path | None = None, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root_pid, every
        self.marker = None if home is None else f"MCC_HOME={home}".encode()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.peak_kb: dict[str, int] = {}  # role -> the largest peak RSS (VmHWM) one of its processes reached
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append((time.time(), self._sample()))

    def stop(self) -> None:
        self.done.set()
        self.join()

    def _sample(self) -> dict[str, float]:
        parent: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parent[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
        tree = {self.root} | {pid for pid in cpu if self.marker is not None and self._marked(pid)}
        frontier = list(tree)
        while frontier:
            pid = frontier.pop()
            for child, ppid in parent.items():
                if ppid == pid and child not in tree:
                    tree.add(child)
                    frontier.append(child)
        out: dict[str, float] = {}
        for pid in tree:
            role = _role(pid, self.root)
            out[f"{role}:{pid}"] = cpu.get(pid, 0.0)
            self.peak_kb[role] = max(self.peak_kb.get(role, 0), _peak_kb(pid))
        return out

    def _marked(self, pid: int) -> bool:
        try:
            return self.marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")  # type: ignore[operator]
        except OSError:
            return False

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per role (workers, manager, mcc run, redis-server) used from ``start`` to ``end``."""
        def at(t: float) -> dict[str, float]:
            """Each process's CPU as last sampled by ``t`` (one that exited since keeps its last figure: the
            workers exit right after the last ack, often before the sample nearest to it)."""
            seen: dict[str, float] = {}
            for when, values in self.samples:
                if when > t + 0.1 and seen:
                    break
                seen.update(values)
            return seen
        a, b = at(start), at(end)
        roles: dict[str, float] = {}
        for key, value in b.items():
            role = key.split(":")[0]
            roles[role] = roles.get(role, 0.0) + value - a.get(key, 0.0)
        return roles


def _peak_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM, KiB) so far; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "mcc run"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    for needle, role in (("mcc.remote.worker", "workers"), ("mcc.remote.manager", "manager"),
                         ("redis-server", "redis-server")):
        if needle in cmd:
            return role
    return "other"


SPIN_20MS = SPIN_ENTRY.format(ms=SECONDS_PER_POINT * 1000, seconds=SECONDS_PER_POINT)


def mcc_run(ctx: Context, n: int, entry: str = SPIN_20MS, rows_per_point: int = 1,
            chunk: int | None = None, repeat: int = 0, points_py: str = POINTS_PY,
            sample_every: float = 0.2) -> dict[str, Any]:
    """A whole ``mcc run`` of ``n`` points of ``entry`` (its source; each point gives ``rows_per_point``
    rows whose first column is the point's number), 2 workers, ``chunk`` points per subproblem
    (None: automatic); cached per invocation (``repeat``: a further measurement of the same run).
    ``points_py``: the project's points.py (``{n}`` is the number of points); ``sample_every``: seconds
    between the samples of CPU and peak memory (``peak_mb`` per role)."""
    key = ("mcc-run", n, entry, rows_per_point, chunk, repeat, points_py)
    if key in ctx.cache:
        return ctx.cache[key]
    with tempdir("b3") as root:
        project = root / "project"
        project.mkdir()
        (project / "points.py").write_text(points_py.format(n=n))
        (project / "entry.py").write_text(entry)
        (project / "mcc.toml").write_text("workers = 2\n" + (f"chunk_size = {chunk}\n" if chunk else ""))
        home = root / "home"
        env = {**os.environ, "MCC_HOME": str(home)}
        ctx.log(f"mcc run: {n:,} points, 2 workers, chunk {chunk or 'automatic'}")
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "mcc.cli", "run", str(project), "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        sampler = CpuSampler(proc.pid, home, sample_every)
        sampler.start()
        try:
            stdout, stderr = proc.communicate(timeout=max(600, n * SECONDS_PER_POINT * 5))
        except BaseException:  # a timeout or Ctrl-C: end the command's whole group, then re-raise
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            raise
        t1 = time.time()
        sampler.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"mcc run exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
        out = json.loads(stdout)
        if out["state"] != "completed" or out["done"] != n:
            raise RuntimeError(f"mcc run did not complete every point: {out}")
        with h5py.File(out["result"], "r") as fh:
            first_column = fh["data"][:, 0]
        np.testing.assert_array_equal(np.sort(first_column), np.repeat(np.arange(n, dtype=float), rows_per_point))
        manager_log = "".join(p.read_text() for p in (project / "results" / out["run_id"] / "logs").glob("manager-*.log"))
        combined_at_end = re.search(r"combined (\d+) results as they came, (\d+) at the end", manager_log)
        events = []
        for seg in sorted((home / "buckets" / out["run_id"] / "journal").glob("*.jsonl")):
            events += [json.loads(line) for line in seg.read_text().splitlines() if line.strip()]
    claims = [float(e["t"]) for e in events if e["type"] == "claimed"]
    acks = [float(e["t"]) for e in events if e["type"] == "acked"]
    res = {
        "points": n, "chunk": out.get("chunk_size"), "total_s": t1 - t0, "compute_s": max(acks) - min(claims),
        "startup_s": min(claims) - t0, "finish_s": t1 - max(acks), "subproblems": len(acks),
        "workers": len({e["worker"] for e in events if e["type"] == "claimed"}),
        "cpu_in_window_s": sampler.between(min(claims), max(acks)),
        "combined_as_they_came": int(combined_at_end.group(1)) if combined_at_end else None,
        "combined_at_end": int(combined_at_end.group(2)) if combined_at_end else None,
        "peak_mb": {role: kb / 1024 for role, kb in sampler.peak_kb.items()},
    }
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for e in events:
        if e["type"] == "claimed":
            first.setdefault(e["worker"], float(e["t"]))
        elif e["type"] == "acked":
            last[e["worker"]] = float(e["t"])
    res["worker_start_spread_s"] = max(first.values()) - min(first.values())
    res["worker_end_spread_s"] = max(last.values()) - min(last.values())
    ctx.log(f"  → compute {res['compute_s']:.2f} s (chunk {res['chunk']}), start-up {res['startup_s']:.2f} s, "
            f"finish {res['finish_s']:.2f} s, total {res['total_s']:.2f} s")
    ctx.cache[key] = res
    return res


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    before = pool_map(ctx, n // 2, workloads.spin_20ms, repeats=1)
    m = mcc_run(ctx, n)
    after = pool_map(ctx, n - n // 2, workloads.spin_20ms, repeats=1, offset=n // 2)
    pool_s = before["seconds"] + after["seconds"]
    ideal = n * SECONDS_PER_POINT / 2
    ratio = m["compute_s"] / pool_s
    cpu = m["cpu_in_window_s"]
    own = sum(v for k, v in cpu.items() if k in ("mcc run", "manager", "redis-server"))
    share = own / (2 * m["compute_s"])
    cpu_note = (f"; the workers' first claims {fmt_s(m['worker_start_spread_s'])} apart, last acks "
                f"{fmt_s(m['worker_end_spread_s'])} apart; in the compute window mcc's own processes used {own:.2f} s CPU = {share:.1%} of the 2 cores "
                f"({', '.join(f'{k} {v:.2f} s' for k, v in sorted(cpu.items()) if k != 'workers')}), the workers "
                f"{cpu.get('workers', 0):.1f} s of {2 * m['compute_s']:.1f} core-seconds")
    return [
        Row("B3", f"{n:,} points × 20 ms CPU, 2 workers, `mcc run` (automatic chunk: {m['chunk']} points); "
                  f"first claim → last ack",
            fmt_s(m["compute_s"]), f"Pool(2).map: {fmt_s(pool_s)} (1st half before mcc {fmt_s(before['seconds'])}, "
                                   f"2nd half after {fmt_s(after['seconds'])}; ideal {fmt_s(ideal)})",
            fmt_ratio(ratio), "≤ 1.05× Pool.map", ratio <= 1.05,
            notes=f"fixed start-up {fmt_s(m['startup_s'])} (command → first claim; Pool start-up "
                  f"{fmt_s(before['pool_startup_s'])}), finish {fmt_s(m['finish_s'])} (last ack → exit: combine, "
                  f"collect, teardown); whole command {fmt_s(m['total_s'])} = {m['total_s'] / pool_s:.2f}× Pool.map"
                  + cpu_note,
            data={"mcc": m, "pool_before": before, "pool_after": after, "pool_s": pool_s}),
    ]
