"""Shared fixtures: an isolated MCC_HOME per test, project builders, and the `mcc` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mcc.providers.local.processes import run_bounded
import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = Path(os.environ.get("MCC_SEED_DIR") or REPO.parent / "shared" / "seed")  # a worktree elsewhere: set it
EXAMPLE = REPO / "examples" / "kpoints"


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def mcc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mcc-home"
    monkeypatch.setenv("MCC_HOME", str(home))
    yield home
    _kill_leftovers(home)


def _kill_leftovers(home: Path) -> None:
    """Safety net: stop any process still tagged with this test's ledger (the test already asserted)."""
    from mcc.providers.local import processes

    uuid_file = home / "ledger.db"
    if not uuid_file.exists():
        return
    import sqlite3

    with sqlite3.connect(uuid_file) as con:
        row = con.execute("select value from meta where key='ledger_uuid'").fetchone()
    if row:
        for proc in processes.find_tagged({"mcc:ledger": row[0]}):
            processes.terminate(proc, grace=2)


def ledger_uuid(home: Path) -> str:
    import sqlite3

    with sqlite3.connect(home / "ledger.db") as con:
        return con.execute("select value from meta where key='ledger_uuid'").fetchone()[0]


def tagged_processes(home: Path, **match: str) -> list:
    from mcc.providers.local import processes

    return processes.find_tagged({"mcc:ledger": ledger_uuid(home), **match})


def run_state(home: Path, run_id: str | None = None) -> str | None:
    import sqlite3

    if not (home / "ledger.db").exists():
        return None
    with sqlite3.connect(home / "ledger.db", timeout=30) as con:
        if run_id:
            row = con.execute("select state from runs where id=?", (run_id,)).fetchone()
        else:
            row = con.execute("select state from runs order by created_at desc limit 1").fetchone()
    return row[0] if row else None


def latest_run_id(home: Path) -> str | None:
    import sqlite3

    if not (home / "ledger.db").exists():
        return None
    try:
        with sqlite3.connect(home / "ledger.db", timeout=30) as con:
            row = con.execute("select id from runs order by created_at desc limit 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def mcc(*args: str, home: Path, timeout: float = 300, check: bool = False, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `mcc` command; returns the completed process (text output)."""
    env = {**os.environ, "MCC_HOME": str(home), "COLUMNS": "200", **(env or {})}
    proc = run_bounded([sys.executable, "-m", "mcc.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"mcc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def mcc_json(*args: str, home: Path, **kw: Any) -> Any:
    proc = mcc(*args, "--json", home=home, check=True, **kw)
    return json.loads(proc.stdout)


def spawn_mcc(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "MCC_HOME": str(home), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "mcc.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


POINTS_PY = """
def get_points():
    return [[float(i), float(i) * 0.5] for i in range({n})]
"""

ENTRY_PY = """
import os, time

def compute(point):
    i = int(point[0])
{body}
    return [point[0], point[1], point[0] * 2.0 + point[1]]
"""


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """A project with ``n`` points [i, i/2] and an entry compute(point) -> [i, i/2, 2i + i/2]."""

    def make(n: int = 200, body: str = "    pass", toml: str = "", name: str = "proj") -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "points.py").write_text(POINTS_PY.format(n=n))
        (d / "entry.py").write_text(ENTRY_PY.format(body=textwrap.indent(textwrap.dedent(body), "    ")))
        (d / "mcc.toml").write_text('entry = "entry:compute"\n' + textwrap.dedent(toml))
        return d

    return make


def seed_points() -> Any:
    """The original README's points (shared/seed/points.py, 19,710 k-points), imported as the seed writes them."""
    import numpy as np

    sys.path.insert(0, str(SEED))
    try:
        import points  # noqa: PLC0415
        return np.asarray(points.get_points(), dtype=float)
    finally:
        sys.path.remove(str(SEED))
        sys.modules.pop("points", None)


def stored_results(buckets: Path, pattern: str = "results/*.pack") -> int:
    """How many subproblems' results the bucket folders matching ``pattern`` hold (in sealed batch objects)."""
    from mcc.work import pack

    return sum(len(pack.members(obj)) for obj in buckets.glob(pattern))


def combined_rows(path: str | Path):
    import h5py

    with h5py.File(path, "r") as fh:
        return fh["data"][...]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Slurm tests share the one-node cluster of the machine: on 2 CPUs, two runs' manager jobs took both and
    each run's workers waited forever. Every ``*slurm*`` test file is in the "slurm" xdist group; a test
    elsewhere that sweeps on Slurm (the benchmarks' B9) carries ``@pytest.mark.xdist_group("slurm")`` itself."""
    for item in items:
        if "slurm" in item.path.name:
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The "slurm" group's tests hold one machine-wide lock while they run (any test process, any pytest session).
    xdist's own grouping cannot do it here: xdist 3.8 renames ``item._nodeid``, which pytest 9.2 no longer reads.
    Outermost (tryfirst), so the wait is outside pytest-timeout's clock; the holder's own timeout bounds it."""
    marks = [m.args[0] if m.args else m.kwargs.get("name") for m in item.iter_markers("xdist_group")]
    if "slurm" not in marks:
        yield
        return
    import fcntl

    with open(Path(tempfile.gettempdir()) / "mcc-tests-slurm.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the test process dies)
        yield
