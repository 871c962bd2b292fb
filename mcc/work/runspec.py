"""What a run is, as the remote side reads it from the bucket: the spec and the key layout.

Shared by the library (which writes it) and remote/ (which reads it); plain data only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SPEC = "spec.json"
POINTS = "points.npy"
PROGRESS = "progress.json"
FINAL = "final.json"
COMBINED = "combined.h5"
RESULTS = "results/"
FAILURES = "failures/"
JOURNAL = "journal/"
INSTANCES = "instances/"
LOGS = "logs/"


def result_key(sub: int) -> str:
    return f"{RESULTS}{sub:07d}.h5"


def sub_of_result_key(key: str) -> int:
    return int(key[len(RESULTS) :].split(".")[0])


def failure_key(sub: int, attempt: int) -> str:
    return f"{FAILURES}{sub:07d}/{attempt:03d}.txt"


def journal_key(first_event_id: str) -> str:
    ms, _, seq = first_event_id.partition("-")
    return f"{JOURNAL}{int(ms):015d}-{int(seq or 0):06d}.jsonl"


def instance_key(worker_id: str) -> str:
    return f"{INSTANCES}{worker_id}.json"


@dataclass(frozen=True)
class RunSpec:
    """Everything the manager and the workers need to know about a run."""

    run_id: str
    ledger_uuid: str
    n_points: int
    chunks: list[tuple[int, int]]  # (first point, number of points) per subproblem
    entry_kind: str  # "function" | "script"
    entry_target: str
    project_dir: str
    workers: int
    max_attempts: int
    point_timeout: float
    lease_seconds: float
    has_combiner: bool
    stall_seconds: float = 0.0  # 0 = 3 × lease
    idle_exit_seconds: float = 120.0  # a worker with nothing to do and no manager exits after this
    tick_seconds: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stall_after(self) -> float:
        return self.stall_seconds or 3 * self.lease_seconds

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "RunSpec":
        raw = json.loads(data)
        raw["chunks"] = [tuple(c) for c in raw["chunks"]]
        return cls(**raw)


def make_chunks(n_points: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``n_points`` into consecutive subproblems of ``chunk_size`` points (the last may be shorter)."""
    return [(start, min(chunk_size, n_points - start)) for start in range(0, n_points, chunk_size)]
