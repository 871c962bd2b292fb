"""mcc's benchmark suite: every figure beside a baseline measured in the same run, and their ratio.

Ratios, not absolute seconds, are the claims: the machine this runs on is shared and noisy.
``python -m bench`` runs every benchmark; ``python -m bench B1 --size 20000`` runs one. Each
benchmark module exposes ``ID``, ``TITLE``, ``DEFAULT_SIZE``, ``SMOKE_SIZE`` and ``run(size, ctx) -> list[Row]``.
Benchmarks are not tests: nothing in the test suite depends on these numbers.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "Context", "BENCHMARKS", "machine", "fmt_rate", "fmt_s", "fmt_ratio"]

# id -> module name (bench.<module>); order is the table's order.
BENCHMARKS: dict[str, str] = {
    "B1": "b1_dispatch",
    "B2": "b2_flatness",
    "B3": "b3_efficiency",
    "B4": "b4_recovery",
    "B5": "b5_ledger",
    "B6": "b6_combine",
    "B7": "b7_aws",
    "B8": "b8_original",
    "B9": "b9_slurm",
    "B10": "b10_estimate",
    "B11": "b11_whole",
    "B12": "b12_memory",
}


@dataclass
class Row:
    """One line of the table. ``met`` is None where there is no target to meet (info rows, skips)."""

    id: str
    what: str
    mcc: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    notes: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """Shared by the benchmarks of one invocation: measurements one benchmark may reuse from another
    (B2 reuses B1's 10k figure, B8 reuses B1's), so each baseline is measured once per run."""

    cache: dict[Any, Any] = field(default_factory=dict)
    verbose: bool = True

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fmt_rate(points_per_s: float) -> str:
    return f"{points_per_s:,.0f} pts/s"


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_ratio(x: float) -> str:
    return f"{x:.3g}×" if x < 10 else f"{x:,.0f}×"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _redis_version() -> str:
    try:
        from mcc.providers.local.cache import find_redis_server

        out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"v=(\S+)", out)
        return m.group(1) if m else out.strip()
    except Exception as exc:  # a description, never a failure
        return f"unknown ({exc})"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including the load when the suite started (noise)."""
    try:
        mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        mem_gib = f"{int(mem) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        mem_gib = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": mem_gib,
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": _redis_version(),
        "redis_py": _version("redis"),
        "rq": _version("rq"),
        "h5py": _version("h5py"),
        "numpy": _version("numpy"),
        "peewee": _version("peewee"),
    }
