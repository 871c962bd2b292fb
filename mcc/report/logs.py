"""The run's logs: the manager's, every worker's and the queue server's, merged into one time-sorted view.

While a run is live its logs are read from the bucket (``logs/`` there); at collect time they are brought to
``<project>/results/<run-id>/logs/`` and read from there afterwards (the bucket is deleted by ``mcc clean``).
One copy on disk: a local bucket's log is hard-linked into the project where both are on one filesystem
(copied otherwise), and the merged view is made when asked (``mcc logs RUN``), not stored, so a chatty entry's
capped output is not kept three times. Each merged line is prefixed by its source (``manager-1``, ``w-0003``,
``redis``). A line without a timestamp (a traceback, a user's print) keeps the time of the line before it.
"""
from __future__ import annotations

import logging
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from mcc.driver.context import Context, store_of
from mcc.errors import MccError
from mcc.ledger import TERMINAL_RUN_STATES, current_ledger, models, queries
from mcc.ledger.db import open_for_reading
from mcc.work.runspec import FAILURES, FINAL, LOGS
from mcc.work.stores import Store

log = logging.getLogger(__name__)

FINISHED_STATES = TERMINAL_RUN_STATES | {"cleaning"}

_PY = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[,.](\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?")
_REDIS = re.compile(r"^\d+:[A-Z] (\d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2})\.(\d{3})")


def parse_timestamp(line: str) -> float | None:
    """UNIX seconds of a line's timestamp prefix (Python logging's asctime, ISO 8601, or redis-server's), else None.

    Times without a zone are local time, as both Python logging and redis-server write them.
    """
    m = _PY.match(line)
    if m:
        day, clock, frac, zone = m.groups()
        stamp = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S")
        if zone:
            tz = timezone.utc if zone == "Z" else datetime.strptime(zone.replace(":", ""), "%z").tzinfo
            seconds = stamp.replace(tzinfo=tz).timestamp()
        else:
            seconds = time.mktime(stamp.timetuple())
        return seconds + (int(frac) / 10 ** len(frac) if frac else 0.0)
    m = _REDIS.match(line)
    if m:
        stamp = datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S")
        return time.mktime(stamp.timetuple()) + int(m.group(2)) / 1000
    return None


def source_name(filename: str) -> str:
    """``logs/w-0003.log`` → ``w-0003``."""
    name = filename.rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".log") else name


def merge(texts: dict[str, str]) -> list[str]:
    """Every line of every source, sorted by timestamp (stable: a source's lines keep their order), each
    prefixed by its source name padded to one width."""
    width = max((len(s) for s in texts), default=0)
    entries: list[tuple[float, int, int, str]] = []
    for rank, source in enumerate(sorted(texts)):
        lines = texts[source].splitlines()
        stamps = [parse_timestamp(line) for line in lines]
        first = next((t for t in stamps if t is not None), 0.0)
        last = first
        for n, (line, stamp) in enumerate(zip(lines, stamps)):
            if not line.strip():
                continue
            last = stamp if stamp is not None else last
            entries.append((last, rank, n, f"{source:<{width}} {line}"))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [e[3] for e in entries]


def bucket_logs(store: Store) -> dict[str, str]:
    """source → text of every ``logs/*.log`` object in the bucket."""
    out = {}
    for key in store.list(LOGS):
        if key.endswith(".log"):
            data = store.get_bytes(key)
            if data is not None:
                out[source_name(key)] = data.decode(errors="replace")
    return out


def folder_logs(folder: Path) -> dict[str, str]:
    """source → text of every ``*.log`` in ``folder``."""
    return {source_name(p.name): p.read_text(errors="replace") for p in sorted(folder.glob("*.log"))}


def collect_logs(store: Store, dest: Path) -> list[Path]:
    """Bring the bucket's ``logs/*.log`` into ``dest`` (hard links from a local bucket on the same
    filesystem, else copies); returns the files, none if the run logged nothing."""
    out = []
    for key in store.list(LOGS):
        if not key.endswith(".log"):
            continue
        target = dest / f"{source_name(key)}.log"
        dest.mkdir(parents=True, exist_ok=True)
        if not (_link(store.local_path(key), target) or store.get_file(key, target)):
            continue  # gone between the listing and now
        out.append(target)
    if out:
        log.info("collected %d log files into %s", len(out), dest)
    return out


def _link(src: Path | None, target: Path) -> bool:
    """Hard-link ``src`` to ``target`` (replacing it); False when there is no local file or no link is possible."""
    if src is None or not src.is_file():
        return False
    if target.exists() and os.path.samefile(src, target):  # collected before (rename would do nothing)
        return True
    tmp = target.with_name(target.name + ".link")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hard links: the caller copies
        return False
    os.replace(tmp, target)
    return True


def collect_failures(store: Store, dest: Path) -> int:
    """Copy the full text of every failed point attempt (``failures/SUB/ATTEMPT.txt``: the traceback or
    the script's stderr) to ``dest/failures/``; returns how many. The ledger and `mcc status` keep one line."""
    keys = store.list(FAILURES)
    for key in keys:
        data = store.get_bytes(key)
        if data is not None:
            path = dest / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return len(keys)


def results_logs_dir(run: models.Run) -> Path:
    """``<project>/<results_dir>/<run-id>/logs``."""
    return Path(run.project_dir) / (run.settings or {}).get("results_dir", "results") / run.id / "logs"


_contexts: dict[str, Context] = {}


def _store(run: models.Run) -> Store | None:
    """The run's bucket (None before provisioning recorded it)."""
    ledger = current_ledger() or open_for_reading()
    ctx = _contexts.get(run.id)
    if ctx is None or ctx.ledger is not ledger:
        ctx = _contexts[run.id] = Context.for_run(ledger, run)
    return store_of(ctx, run)


def _select(texts: dict[str, str], worker: str | None) -> dict[str, str]:
    if worker is None:
        return texts
    chosen = {s: t for s, t in texts.items() if s == worker or s.startswith(worker + "-")}
    if not chosen:
        raise MccError(f"no log named {worker!r}; the logs are: {', '.join(sorted(texts)) or 'none yet'}")
    return chosen


def run_logs(run_id: str, worker: str | None = None, *, home: str | Path | None = None) -> dict[str, str]:
    """source → text of the run's logs: from results/ once the run is finished, else from the bucket."""
    if home is not None or current_ledger() is None:
        open_for_reading(home)
    run = queries.get_run(run_id)
    folder = results_logs_dir(run)
    store = None if run.state in FINISHED_STATES and folder.is_dir() else _store(run)
    if store is not None:
        texts = bucket_logs(store)
    elif folder.is_dir():
        texts = folder_logs(folder)
    else:
        raise MccError(f"run {run.id} has no logs left: its bucket is gone and {folder} does not exist.")
    return _select(texts, worker)


def merged_lines(run_id: str, worker: str | None = None, *, home: str | Path | None = None) -> list[str]:
    """The merged, time-sorted view of the run's logs (or of one worker's)."""
    return merge(run_logs(run_id, worker, home=home))


def follow(run_id: str, worker: str | None = None, *, poll: float = 0.5, quiet_polls: int = 4,
           home: str | Path | None = None) -> Iterator[str]:
    """Merged lines as they are written, until the run is finished.

    Ends when the ledger says the run is finished, or when the bucket holds the manager's final report
    and ``quiet_polls`` polls in a row brought no new line (a detached run nobody is driving).
    """
    if home is not None or current_ledger() is None:
        open_for_reading(home)
    seen: dict[str, int] = {}
    quiet = 0
    while True:
        run = queries.get_run(run_id)
        finished = run.state in FINISHED_STATES
        texts = run_logs(run.id) if not seen or finished else _live_texts(run)
        fresh: dict[str, str] = {}
        for source, text in _select_lenient(texts, worker).items():
            end = text.rfind("\n") + 1 if not finished else len(text)
            start = seen.get(source, 0)
            if end > start:
                fresh[source] = text[start:end]
                seen[source] = end
        yield from merge(fresh)
        quiet = 0 if fresh else quiet + 1
        if finished:
            return
        store = _store(run)
        if store is None or (store.exists(FINAL) and quiet >= quiet_polls):
            return
        time.sleep(poll)


def _live_texts(run: models.Run) -> dict[str, str]:
    store = _store(run)
    return bucket_logs(store) if store is not None else {}


def _select_lenient(texts: dict[str, str], worker: str | None) -> dict[str, str]:
    if worker is None:
        return texts
    return {s: t for s, t in texts.items() if s == worker or s.startswith(worker + "-")}

