"""Everything checked before any resource exists: settings, project, and one timed probe point.

The probe runs the entry on the first point (a function in-process, a script as a subprocess) so a
broken entry fails here with a clear message, and so the automatic chunk size is ~2 s of work.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mcc.project.settings import Settings, load_settings
from mcc.errors import ProjectError
from mcc.project.folder import Project, auto_chunk_size, failure, load_function, load_project, rows_from_result
from mcc.providers.local.processes import run_bounded
from mcc.work.runspec import make_chunks

PROBE_BUDGET = 30.0  # seconds; a slower first point means chunks of one point


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
    project = load_project(Path(project_dir), settings)
    seconds = None
    chunk = settings.chunk_size
    if chunk is None:
        seconds = probe_entry(project, min(settings.point_timeout, PROBE_BUDGET))
        chunk = auto_chunk_size(seconds, len(project.points), settings.workers)
    return Prepared(settings, project, chunk, seconds)


def probe_entry(project: Project, budget: float) -> float:
    """Seconds the entry takes on the first point (inf if it exceeds ``budget``)."""
    point = project.points[0].tolist()
    if project.entry.kind == "script":
        return _probe_script(project, point, budget)
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
        return math.inf
    except Exception as exc:
        raise failure(exc, project.dir, f"The entry {project.entry.target} on the first point {point}",
                      "Nothing was created. Fix the entry and run again.") from exc
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    rows_from_result(result, 0, project.entry.target)
    return elapsed


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
