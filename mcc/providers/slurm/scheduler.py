"""Slurm's command lines and the parsing of their output: pure functions, no processes.

What runs them is a :class:`mcc.providers.slurm.runner.Runner` (a local subprocess now, SSH later),
the split qtoolkit's ``BaseSchedulerIO`` and AiiDA's Scheduler/Transport make, so another scheduler
(PBS, LSF) is one more module of this shape tested against recorded outputs.

Ownership tags travel in ``--comment`` as ``key=value`` pairs joined by commas
(``mcc:ledger=…,mcc:run=…,mcc:entity=…,Name=…``).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

#: squeue -O fields, each printed unpadded and ended by "|" (-O NAME:| never truncates).
SQUEUE_FIELDS = ("JobArrayID", "JobID", "ArrayJobID", "ArrayTaskID", "Name", "Comment", "State", "StartTime",
                 "NumCPUs", "RestartCnt", "Partition")
RUNNING = {"RUNNING", "CONFIGURING"}
#: states in which a job still holds or waits for resources (not yet gone)
ALIVE = RUNNING | {"PENDING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                   "SIGNALING", "STAGE_OUT", "STOPPED"}
#: sbatch options mcc sets itself: site extras (``sbatch_args``) may not override them
OWNED_OPTIONS = ("--array", "-a", "--comment", "--job-name", "-J", "--output", "-o", "--error", "-e", "--parsable",
                 "--chdir", "-D", "--wrap", "--test-only")
TIME_LIMIT_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")


@dataclass(frozen=True)
class JobRequest:
    """One sbatch submission; ``script`` goes to sbatch's stdin."""

    name: str
    comment: str
    script: str
    output: str
    chdir: str
    cpus: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None
    mem: str | None = None
    array: str | None = None          # e.g. "0-7%2"
    requeue: bool | None = None
    extra: tuple[str, ...] = ()       # validated site options (sbatch_args)


@dataclass(frozen=True)
class JobInfo:
    """One line of squeue: a job, or one task of a job array (``id`` "123_4")."""

    id: str
    job_id: str
    array_job_id: str | None
    array_task_id: str | None
    name: str
    comment: str
    state: str
    start: float | None
    cpus: int
    restarts: int
    partition: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state in RUNNING


@dataclass(frozen=True)
class JobTimes:
    """What the scheduler says one run of a job used (a requeued job runs again under the same id)."""

    id: str
    start: float | None
    end: float | None
    cpus: int
    state: str


def comment_of(tags: dict[str, str]) -> str:
    """Tags as a --comment value; commas and '=' in values are replaced so the text parses back."""
    return ",".join(f"{k}={_clean(v)}" for k, v in sorted(tags.items()))


def tags_of(comment: str) -> dict[str, str]:
    tags = {}
    for part in comment.split(","):
        key, sep, value = part.partition("=")
        if sep and key:
            tags[key.strip()] = value.strip()
    return tags


def _clean(value: str) -> str:
    return re.sub(r"[,=|\s]", "_", str(value))


def sbatch_argv(req: JobRequest, *, test_only: bool = False) -> list[str]:
    argv = ["sbatch", "--parsable", f"--job-name={req.name}", f"--comment={req.comment}",
            f"--output={req.output}", f"--chdir={req.chdir}", f"--cpus-per-task={req.cpus}", "--ntasks=1"]
    for flag, value in (("--partition", req.partition), ("--account", req.account), ("--qos", req.qos),
                        ("--time", req.time_limit), ("--mem", req.mem), ("--array", req.array)):
        if value:
            argv.append(f"{flag}={value}")
    if req.requeue is not None:
        argv.append("--requeue" if req.requeue else "--no-requeue")
    argv += list(req.extra)
    if test_only:
        argv.append("--test-only")
    return argv


def parse_sbatch(out: str) -> str:
    """The job id from ``sbatch --parsable`` ("123" or "123;cluster")."""
    line = out.strip().splitlines()[-1] if out.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {out!r}")
    return job_id


def squeue_argv(user_only: bool = True) -> list[str]:
    argv = ["squeue", "--noheader", "--array", "-O", ",".join(f"{f}:|" for f in SQUEUE_FIELDS)]
    return argv + (["--me"] if user_only else [])


def parse_squeue(out: str) -> list[JobInfo]:
    """Lines of :func:`squeue_argv`; a comment holding '|' is put back together."""
    jobs = []
    n_left, n_right = SQUEUE_FIELDS.index("Comment"), len(SQUEUE_FIELDS) - SQUEUE_FIELDS.index("Comment") - 1
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("|")
        if parts and parts[-1] == "":
            parts = parts[:-1]
        if len(parts) < len(SQUEUE_FIELDS):
            continue
        left, right = parts[:n_left], parts[len(parts) - n_right:]
        comment = "|".join(parts[n_left:len(parts) - n_right])
        jid, job_id, array_job, array_task, name = (p.strip() for p in left)
        state, start, cpus, restarts, partition = (p.strip() for p in right)
        jobs.append(JobInfo(
            id=jid, job_id=job_id, array_job_id=_na(array_job), array_task_id=_na(array_task), name=name,
            comment=comment.strip(), state=state.split()[0] if state else "", start=parse_time(start),
            cpus=_int(cpus, 1), restarts=_int(restarts, 0), partition=partition, tags=tags_of(comment.strip())))
    return jobs


def scancel_argv(ids: Iterable[str]) -> list[str]:
    return ["scancel", *ids]


def sacct_argv(ids: Iterable[str]) -> list[str]:
    """--duplicates: every run of a requeued job, not only its last."""
    return ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates", "--jobs", ",".join(ids),
            "--format=JobID,Start,End,AllocCPUS,State"]


def parse_sacct(out: str) -> dict[str, list[JobTimes]]:
    """Every run of each job, oldest first (a job requeued after a preemption ran more than once)."""
    runs: dict[str, list[JobTimes]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        jid, start, end, cpus, state = (p.strip() for p in parts[:5])
        runs.setdefault(jid, []).append(
            JobTimes(jid, parse_time(start), parse_time(end), _int(cpus, 1), state.split()[0] if state else ""))
    return runs


def parse_jobcomp(text: str) -> dict[str, list[JobTimes]]:
    """jobcomp/filetxt lines (``JobId=3 … StartTime=… EndTime=… ProcCnt=1 … ArrayJobId=1 ArrayTaskId=0``): every
    run of each job, oldest first (a line is written each time a run ends: a requeued job has one per run). A run
    that never got a node (``NodeCnt=0``: cancelled while it waited) has no start; its StartTime is only when it
    was cancelled."""
    runs: dict[str, list[JobTimes]] = {}
    for line in text.splitlines():
        kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "JobId" not in kv:
            continue
        task = kv.get("ArrayTaskId")
        jid = f"{kv['ArrayJobId']}_{task}" if task not in (None, "", "4294967294") and kv.get("ArrayJobId") else kv["JobId"]
        ran = kv.get("NodeCnt") != "0"
        runs.setdefault(jid, []).append(JobTimes(
            jid, parse_time(kv.get("StartTime", "")) if ran else None, parse_time(kv.get("EndTime", "")),
            _int(kv.get("ProcCnt", "1"), 1), kv.get("JobState", "")))
    return runs


def jobcomp_location(show_config: str) -> str | None:
    """JobCompLoc from ``scontrol show config`` when the filetxt plugin is in use."""
    kv = {}
    for line in show_config.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key.strip()] = value.strip()
    return kv.get("JobCompLoc") if kv.get("JobCompType") == "jobcomp/filetxt" else None


def parse_time(text: str) -> float | None:
    """Slurm's local ISO time ("2026-12-02T00:31:19") as epoch seconds; N/A, Unknown, None → None."""
    text = (text or "").strip()
    if not text or text in ("N/A", "Unknown", "None", "0"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def time_limit_seconds(text: str) -> int:
    """Seconds of a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS); ValueError if malformed."""
    m = TIME_LIMIT_RE.match(text.strip())
    if not m or text.strip() in ("", "0"):
        raise ValueError(text)
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if b is None:  # minutes
        return int(a) * 60
    if c is None:  # MM:SS
        return int(a) * 60 + int(b)
    return int(a) * 3600 + int(b) * 60 + int(c)


def owned_option(arg: str) -> str | None:
    """The mcc-owned sbatch option ``arg`` would set, or None."""
    head = arg.strip().split("=", 1)[0].split()[0] if arg.strip() else ""
    for opt in OWNED_OPTIONS:
        if head == opt or (len(opt) == 2 and head.startswith(opt) and not head.startswith("--")):
            return opt
    return None


def shell_script(env: dict[str, str], argv: list[str]) -> str:
    """The batch script: export ``env``, then exec ``argv`` (so Slurm's signals reach it directly)."""
    lines = ["#!/bin/sh", "# written by mcc"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def _na(text: str) -> str | None:
    return None if text in ("", "N/A", "4294967294") else text


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default
