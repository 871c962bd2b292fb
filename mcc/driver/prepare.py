"""Everything checked before any resource exists: settings, project, and one timed probe point.

The probe runs the entry on the first point (a function in-process, a script as a subprocess) so a
broken entry fails here with a clear message, and so the automatic chunk size is ~2 s of work (and
a chunk's result file no bigger than ``MAX_CHUNK_BYTES``).
:func:`probe_sample` widens it for ``mcc run --estimate``: a few points spread over the sweep, timed
in a child process (a sampled point may crash or hang the entry: the run's own probe stays the first
point, which a user's entry is known to survive, and only the estimate pays for the spread).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from mcc.project.settings import Settings, load_settings
from mcc.errors import ProjectError
from mcc.project.folder import Project, auto_chunk_size, failure, load_function, load_project, rows_from_result
from mcc.providers.local.processes import run_bounded
from mcc.work.runspec import make_chunks

PROBE_BUDGET = 30.0  # seconds; a slower first point means chunks of one point
SAMPLE_POINTS = 5  # points the estimate times, spread over the sweep (the first and the last among them)


@dataclass(frozen=True)
class Prepared:
    settings: Settings
    project: Project
    chunk_size: int
    seconds_per_point: float | None

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return make_chunks(len(self.project.points), self.chunk_size)


def prepare(project_dir: str | Path, overrides: Mapping[str, Any] | None = None,
            aws: Mapping[str, Any] | None = None) -> Prepared:
    """Load and validate a project; size its chunks. Raises ConfigError/ProjectError, creates nothing.

    ``aws`` (flags such as --region/--spot) is merged over the [aws] table of mcc.toml.
    """
    settings = load_settings(Path(project_dir), overrides)
    flags = {k: v for k, v in (aws or {}).items() if v is not None}
    if flags:
        settings = dataclasses.replace(settings, aws={**settings.aws, **flags})
    if settings.backend == "aws":
        from mcc.backends.aws_settings import aws_settings

        aws_settings(settings.aws, f"{Path(project_dir) / 'mcc.toml'} [aws] (or its flags)")
    if settings.backend == "slurm":
        from mcc.backends.slurm_settings import slurm_settings

        array_width = slurm_settings(settings.slurm, f"{Path(project_dir) / 'mcc.toml'} [slurm]").workers
        if array_width:  # [slurm] workers = the array's %N
            settings = dataclasses.replace(settings, workers=array_width)
    project = load_project(Path(project_dir), settings)
    seconds = None
    chunk = settings.chunk_size
    if chunk is None:
        seconds, result_bytes = probe_entry(project, min(settings.point_timeout or PROBE_BUDGET, PROBE_BUDGET))
        chunk = auto_chunk_size(seconds, len(project.points), settings.workers, result_bytes)
    return Prepared(settings, project, chunk, seconds)


def oversubscription(backend: str, workers: int, cores: int | None = None) -> str | None:
    """A warning when local workers outnumber this machine's cores (they share them: each point takes
    longer and nothing is gained), else None. Not refused: the user may know better."""
    cores = cores or os.cpu_count() or 1
    if backend != "local" or workers <= cores:
        return None
    return (f"{workers} local workers on {cores} cores: they share the cores, so each point takes longer and the "
            f"sweep is not faster; `--workers {cores}` fits this machine.")


class Probe(NamedTuple):
    """The entry run on the first point."""

    seconds: float  # inf if it exceeded the budget
    result_bytes: int  # of its rows as a result file holds them (float64); 0: not known (a script entry, a timeout)


def probe_entry(project: Project, budget: float) -> Probe:
    """The entry on the first point: how long it took (inf if it exceeds ``budget``), how big its rows are."""
    point = project.points[0].tolist()
    if project.entry.kind == "script":
        return Probe(_probe_script(project, point, budget), 0)
    fn = load_function(project.dir, project.entry.target)
    use_alarm = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    started = time.perf_counter()
    try:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, budget)
        result = fn(point)
        elapsed = time.perf_counter() - started
    except _ProbeTimeout:
        return Probe(math.inf, 0)
    except Exception as exc:
        raise failure(exc, project.dir, f"The entry {project.entry.target} on the first point {point}",
                      "Nothing was created. Fix the entry and run again.") from exc
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return Probe(elapsed, rows_from_result(result, 0, project.entry.target).nbytes)


def _probe_script(project: Project, point: list[float], budget: float) -> float:
    with tempfile.TemporaryDirectory(prefix="mcc-probe-") as tmp:
        out = Path(tmp) / "probe.h5"
        argv = [sys.executable, str(project.dir / project.entry.target), str(out), *map(repr, point)]
        started = time.perf_counter()
        try:
            proc = run_bounded(argv, cwd=project.dir, capture_output=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return math.inf
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise ProjectError(
                f"The entry script {project.entry.target} exited with status {proc.returncode} on the first "
                f"point {point}. Nothing was created. Fix the script (it is run as `python "
                f"{project.entry.target} OUTFILE x y z ...` and appends rows to OUTFILE); its stderr:\n"
                f"{proc.stderr.decode(errors='replace')[-3000:]}"
            )
    return elapsed


class _ProbeTimeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _ProbeTimeout


@dataclass(frozen=True)
class Sample:
    """Seconds the entry took on sampled points (``inf``: over the budget); ``failed`` maps the index of a
    point that raised or crashed to why (it is left out of the timings)."""

    indices: list[int]
    seconds: list[float]
    failed: dict[int, str]

    @property
    def timed(self) -> list[float]:
        return [s for s in self.seconds if math.isfinite(s)]

    def to_dict(self) -> dict[str, Any]:
        timed = self.timed
        return {"indices": self.indices, "seconds": self.seconds, "failed": {str(k): v for k, v in self.failed.items()},
                "mean_s": sum(timed) / len(timed) if timed else None, "min_s": min(timed, default=None),
                "max_s": max(timed, default=None)}


def sample_indices(n_points: int, count: int = SAMPLE_POINTS) -> list[int]:
    """``count`` point indices spread evenly over ``n_points``, the first and the last included."""
    if n_points <= 0:
        return []
    if count <= 1 or n_points == 1:
        return [0]
    return sorted({round(i * (n_points - 1) / (count - 1)) for i in range(count)})


def probe_sample(project: Project, budget: float, count: int = SAMPLE_POINTS) -> Sample:
    """Time the entry on ``count`` points spread over the sweep (each allowed ``budget`` s).

    The first point must succeed (as for :func:`probe_entry`); another point that raises or crashes is
    recorded in ``failed`` and skipped. A function entry runs in one child process, a script once per point.
    """
    indices = sample_indices(len(project.points), count)
    if project.entry.kind == "script":
        seconds, failed = [], {}
        for i in indices:
            try:
                seconds.append(_probe_script(project, project.points[i].tolist(), budget))
            except ProjectError as exc:
                if i == indices[0]:
                    raise
                seconds.append(math.nan)
                failed[i] = str(exc).split(" Nothing was created.")[0]
    else:
        seconds, failed = _probe_child(project, indices, budget)
    if indices and indices[0] in failed:
        raise ProjectError(f"The entry {project.entry.target} on the first point {project.points[0].tolist()} "
                           f"{failed[indices[0]]}. Nothing was created. Fix the entry and run again.")
    keep = [k for k, i in enumerate(indices) if i not in failed]
    return Sample([indices[k] for k in keep], [seconds[k] for k in keep], failed)


def _probe_child(project: Project, indices: list[int], budget: float) -> tuple[list[float], dict[int, str]]:
    """Time a function entry on ``indices`` in a child process; a crash fails the point it was on."""
    request = {"dir": str(project.dir), "target": project.entry.target, "budget": budget,
               "points": [[i, project.points[i].tolist()] for i in indices]}
    seconds: dict[int, float] = {}
    failed: dict[int, str] = {}
    todo = list(request["points"])
    while todo:
        request["points"] = todo
        proc = subprocess.Popen([sys.executable, "-c", "from mcc.driver.prepare import _sample_child; _sample_child()"],
                                cwd=project.dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=budget * len(todo) + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        for line in out.decode(errors="replace").splitlines():
            doc = json.loads(line)
            if doc.get("error"):
                failed[doc["i"]] = doc["error"]
            else:
                seconds[doc["i"]] = float(doc["s"])
        done = set(seconds) | set(failed)
        rest = [p for p in todo if p[0] not in done]
        if rest:  # the child died on rest[0]: that point failed; go on with the others
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            failed[rest[0][0]] = f"crashed the entry's process ({tail[0]})"
            rest = rest[1:]
        todo = rest
    return [seconds.get(i, math.nan) for i in indices], failed


def _sample_child() -> None:
    """The child of :func:`_probe_child`: a JSON request on stdin, one JSON line per timed point."""
    req = json.loads(sys.stdin.read())
    fn = load_function(Path(req["dir"]), req["target"])
    signal.signal(signal.SIGALRM, _alarm)
    for i, point in req["points"]:
        started = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, req["budget"])
            rows_from_result(fn(point), i, req["target"])
            doc: dict[str, Any] = {"i": i, "s": time.perf_counter() - started}
        except _ProbeTimeout:
            doc = {"i": i, "s": "inf"}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            doc = {"i": i, "error": f"raised {type(exc).__name__}: {str(exc).strip()[:300] or '(no message)'}"}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps(doc), flush=True)
