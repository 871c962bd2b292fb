"""Slurm jobs (kind ``job``): submit, query, cancel, by tags carried in ``--comment``.

Verb functions (submit_job, query_jobs, cancel_jobs, job_times) serve both the job provider the
laptop's engine drives (the manager job) and the Slurm fleet of the remote manager (worker arrays).
A job array is one resource whose physical id is its array job id; its tasks are ``<id>_<task>``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec
from mcc.providers.slurm import scheduler
from mcc.providers.slurm.runner import LocalRunner, Runner, SchedulerError
from mcc.providers.slurm.scheduler import JobInfo, JobRequest, JobTimes

CANCEL_WAIT = 60.0  # seconds scancel'd jobs may take to leave squeue


def submit_job(runner: Runner, req: JobRequest) -> str:
    """sbatch the request; returns the job id (the array job id for an array)."""
    Path(req.output).parent.mkdir(parents=True, exist_ok=True)
    result = runner.run(scheduler.sbatch_argv(req), stdin=req.script).check()
    return scheduler.parse_sbatch(result.stdout)


def test_job(runner: Runner, req: JobRequest) -> None:
    """``sbatch --test-only``: raises SchedulerError with Slurm's reason if the request cannot run."""
    runner.run(scheduler.sbatch_argv(req, test_only=True), stdin=req.script).check()


def query_jobs(runner: Runner) -> list[JobInfo]:
    """Every job and array task of this user that squeue still lists (one squeue call)."""
    return scheduler.parse_squeue(runner.run(scheduler.squeue_argv()).check().stdout)


def owned(jobs: Iterable[JobInfo], ledger_uuid: str, run_id: str | None = None) -> list[JobInfo]:
    return [j for j in jobs if j.tags.get(TAG_LEDGER) == ledger_uuid and (run_id is None or j.tags.get(TAG_RUN) == run_id)]


def matches(job: JobInfo, physical_id: str) -> bool:
    """``physical_id`` names this job: its id, its task id "A_T", or the array "A" it belongs to."""
    return physical_id in (job.id, job.job_id, job.array_job_id)


def cancel_jobs(runner: Runner, ids: list[str], wait: float = CANCEL_WAIT) -> None:
    """scancel ``ids`` and wait until squeue lists none of them alive (scancel again while they linger)."""
    if not ids:
        return
    deadline = time.monotonic() + wait
    pending = list(ids)
    while True:
        if pending:
            result = runner.run(scheduler.scancel_argv(pending))
            if result.returncode != 0 and "Invalid job id" not in result.stderr:
                result.check()
        alive = [j for j in query_jobs(runner) if j.state in scheduler.ALIVE and any(matches(j, i) for i in ids)]
        if not alive:
            return
        if time.monotonic() > deadline:
            raise SchedulerError(f"jobs still listed by squeue {wait:.0f} s after scancel: "
                                 f"{', '.join(f'{j.id} ({j.state})' for j in alive)}")
        # a COMPLETING job is already ending: wait for it; cancel again only what still runs or waits
        pending = [i for i in ids if any(matches(j, i) and j.state != "COMPLETING" for j in alive)]
        time.sleep(0.5)


def job_times(runner: Runner, ids: list[str]) -> dict[str, list[JobTimes]]:
    """Every run (start/end/CPUs/state, oldest first) of jobs from the scheduler: sacct where accounting runs, else
    the jobcomp/filetxt file when readable. Keys are job ids and array task ids ("A_T"); jobs it cannot tell are
    left out."""
    if not ids:
        return {}
    try:
        result = runner.run(scheduler.sacct_argv(ids))
    except SchedulerError:
        result = None
    if result is not None and result.returncode == 0 and result.stdout.strip():
        return scheduler.parse_sacct(result.stdout)
    config = runner.run(["scontrol", "show", "config"])
    location = scheduler.jobcomp_location(config.stdout) if config.returncode == 0 else None
    if not location:
        return {}
    text = runner.run(["cat", location])
    if text.returncode != 0:
        return {}
    wanted = set(ids)
    return {k: v for k, v in scheduler.parse_jobcomp(text.stdout).items()
            if k in wanted or k.split("_")[0] in wanted}


def request_of(spec: ResourceSpec) -> JobRequest:
    p = spec.params
    return JobRequest(
        name=p["name"], comment=scheduler.comment_of(spec.tags), script=p["script"], output=p["output"],
        chdir=p["chdir"], cpus=int(p.get("cpus") or 1), partition=p.get("partition"), account=p.get("account"),
        qos=p.get("qos"), time_limit=p.get("time_limit"), mem=p.get("mem"), array=p.get("array"),
        requeue=p.get("requeue"), extra=tuple(p.get("extra") or ()))


class SlurmJobProvider:
    """kind ``job``: physical id is the Slurm job id (an array's job id, or "A_T" for one array task)."""

    kind = "job"

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner or LocalRunner()

    def create(self, spec: ResourceSpec) -> Found:
        job_id = submit_job(self.runner, request_of(spec))
        return Found(job_id, {"job_id": job_id, "submitted_at": time.time()}, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        for job in owned(query_jobs(self.runner), spec.tags[TAG_LEDGER]):
            if job.tags.get(TAG_ENTITY) == spec.tags[TAG_ENTITY] and job.state in scheduler.ALIVE:
                job_id = job.array_job_id or job.job_id
                return Found(job_id, {"job_id": job_id, "found_at": time.time()}, job.tags)
        return None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        for job in query_jobs(self.runner):
            if matches(job, physical_id) and job.state in scheduler.ALIVE:
                return Found(physical_id, {**attrs, "state": job.state, "start": job.start, "cpus": job.cpus}, job.tags)
        return None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """scancel and verify; a job squeue no longer lists alive is already deleted (no scancel sent).

        An array task's row stands for one run of it (``restarts`` in its attrs): once Slurm requeued the task
        (preempted), the task squeue lists is its next run, the array's, which this row's delete leaves alone."""
        restarts = int(attrs.get("restarts") or 0)
        if any(matches(j, physical_id) and j.state in scheduler.ALIVE
               and not (j.id == physical_id and j.array_task_id is not None and j.restarts > restarts)
               for j in query_jobs(self.runner)):
            cancel_jobs(self.runner, [physical_id])

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        """Alive jobs whose comment names this ledger (an array once, by its array job id)."""
        found: dict[str, Found] = {}
        for job in owned(query_jobs(self.runner), ledger_uuid, run_id):
            if job.state in scheduler.ALIVE:
                job_id = job.array_job_id or job.job_id
                found.setdefault(job_id, Found(job_id, {"job_id": job_id, "state": job.state}, job.tags))
        return list(found.values())
