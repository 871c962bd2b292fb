"""The Slurm backend: the bucket is a folder on a filesystem the compute nodes share; the manager and
its redis-server run as one small Slurm job (remote/slurm_job.py); workers are job arrays of
long-lived pilot tasks submitted by the manager (remote/slurm_fleet.py). Every job is a ledger
resource of kind ``job``, tagged in ``--job-name``/``--comment``.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mcc.backends.slurm_settings import SlurmSettings, slurm_settings
from mcc.driver.engine import CLOCK_SKEW_S, Engine
from mcc.errors import ConfigError
from mcc.ledger import create_row, fire, models
from mcc.providers.base import TAG_LEDGER, TAG_NAME
from mcc.providers.local.bucket import DirectoryProvider
from mcc.providers.local.cache import new_password
from mcc.providers.slurm import scheduler
from mcc.providers.slurm.jobs import SlurmJobProvider, cancel_jobs, job_times, query_jobs, submit_job, test_job
from mcc.providers.slurm.runner import LocalRunner, Runner, SchedulerError, SchedulerMissing
from mcc.providers.slurm.scheduler import JobRequest, JobTimes
from mcc.work.stores import LocalStore

PASSWORD_FILE = "queue-password"   # in the bucket folder, mode 0600: the manager job's redis and its workers read it
SHARED_MARK = ".mcc-shared"        # written once a probe job proved the bucket folder shared and writable


class SharedDirectoryProvider(DirectoryProvider):
    """Bucket folders under ``bucket_dir`` (a filesystem the compute nodes see)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)


class SlurmBackend:
    name = "slurm"
    region = None
    poll_seconds = (0.5, 2.0)  # each poll asks squeue about the manager job: stay gentle on slurmctld

    def __init__(self, home: Path, ledger_uuid: str, settings: SlurmSettings, runner: Runner | None = None) -> None:
        self.home, self.ledger_uuid, self.settings = home, ledger_uuid, settings
        self.runner = runner or LocalRunner()
        self.bucket_root = Path(settings.bucket_dir).expanduser().resolve() if settings.bucket_dir else home / "slurm-buckets"
        self.tick_seconds = settings.tick_seconds
        self.manager_boot_seconds = settings.manager_boot_seconds  # a job may wait in the queue that long
        self.manager_silence_seconds = max(60.0, 20 * settings.tick_seconds)
        self.providers: dict[str, Any] = {"directory": SharedDirectoryProvider(self.bucket_root),
                                          "job": SlurmJobProvider(self.runner)}

    # -- before anything exists --------------------------------------------------------------------
    def preflight(self) -> None:
        """sbatch on PATH, the partition/account/limits accepted (sbatch --test-only), the bucket folder
        writable here and from a compute node."""
        import shutil

        for cmd in ("sbatch", "squeue", "scancel"):
            if shutil.which(cmd) is None:
                raise SchedulerMissing(
                    f"`{cmd}` is not on PATH, so the Slurm backend cannot run (backend = \"slurm\"). Run mcc on the "
                    f"cluster's login node, load its Slurm module (e.g. `module load slurm`), or use --backend local.")
        self._check_bucket_dir()
        for what, req in (("worker", self._request("probe", "true", os.devnull, array=None, worker=True)),
                          ("manager", self._request("probe", "true", os.devnull, array=None, worker=False))):
            try:
                test_job(self.runner, req)
            except SchedulerError as exc:
                raise ConfigError(self._refusal(what, str(exc))) from None
        if not (self.bucket_root / SHARED_MARK).exists():
            self._probe_shared()

    def _refusal(self, what: str, detail: str) -> str:
        s = self.settings
        partitions = self.runner.run(["sinfo", "--noheader", "--format=%R"])
        names = sorted(set(partitions.stdout.split())) if partitions.returncode == 0 else []
        asked = ", ".join(f"{k} = {v!r}" for k, v in (
            ("partition", s.manager_partition if what == "manager" and s.manager_partition else s.partition),
            ("account", s.account), ("qos", s.qos),
            ("time_limit", s.manager_time_limit if what == "manager" and s.manager_time_limit else s.time_limit),
            ("sbatch_args", s.sbatch_args or None)) if v)
        hint = f" Partitions here: {', '.join(names)}." if names else ""
        return (f"mcc.toml [slurm]: Slurm refuses the {what} job ({asked or 'defaults'}): "
                f"{detail.split(': ', 1)[-1].strip()}. Nothing was submitted. Fix the setting in [slurm]{hint}")

    def _check_bucket_dir(self) -> None:
        where = "`bucket_dir` in mcc.toml [slurm]" if self.settings.bucket_dir else "the default bucket_dir ($MCC_HOME/slurm-buckets)"
        try:
            self.bucket_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.bucket_root / f".mcc-write-{uuid.uuid4().hex[:8]}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"{where} = {str(self.bucket_root)!r} is not writable here ({exc.strerror or exc}). "
                              f"Fix: set bucket_dir to a folder you can write on a filesystem the compute nodes share "
                              f"(e.g. under $HOME or your project/scratch space).") from None

    def _probe_shared(self, timeout: float = 300.0) -> None:
        """One tiny job writes a file into the bucket folder from a compute node; we must see it here."""
        token = uuid.uuid4().hex[:12]
        mark = self.bucket_root / f".mcc-probe-{token}"
        tags = {TAG_LEDGER: self.ledger_uuid, TAG_NAME: "probe"}
        req = self._request(f"mcc-probe-{token}", f"echo \"$(hostname)\" > {mark}\n", str(self.bucket_root / f".mcc-probe-{token}.out"),
                            array=None, worker=False, comment=scheduler.comment_of(tags), time_limit="5")
        job_id = submit_job(self.runner, req)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if mark.exists():
                    break
                alive = [j for j in query_jobs(self.runner) if j.job_id == job_id and j.state in scheduler.ALIVE]
                if not alive:
                    time.sleep(0.5)  # a shared filesystem may show the file a moment later
                    if mark.exists():
                        break
                    where = "`bucket_dir`" if self.settings.bucket_dir else "the default bucket_dir ($MCC_HOME/slurm-buckets)"
                    raise ConfigError(
                        f"mcc.toml [slurm]: {where} = {str(self.bucket_root)!r} is not writable from the compute node "
                        f"(probe job {job_id} ran but its file never appeared here). Fix: set bucket_dir to a folder "
                        f"on a filesystem the compute nodes share and can write (e.g. under $HOME or scratch).")
                time.sleep(0.2)
            else:
                raise ConfigError(f"the probe job {job_id} did not run within {timeout:.0f} s; is the partition busy? "
                                  f"Nothing else was submitted.")
        finally:
            cancel_jobs(self.runner, [job_id])
            for p in (mark, self.bucket_root / f".mcc-probe-{token}.out"):
                p.unlink(missing_ok=True)
        (self.bucket_root / SHARED_MARK).write_text(f"probed by job {job_id} at {time.time():.0f}\n")

    # -- job requests ------------------------------------------------------------------------------
    def _request(self, name: str, script: str, output: str, *, array: str | None, worker: bool,
                 comment: str = "", time_limit: str | None = None) -> JobRequest:
        s = self.settings
        return JobRequest(
            name=name, comment=comment, script=script if script.startswith("#!") else "#!/bin/sh\n" + script,
            output=output, chdir=str(self.bucket_root), cpus=s.cpus_per_worker if worker else 1,
            partition=s.partition if worker else (s.manager_partition or s.partition), account=s.account, qos=s.qos,
            time_limit=time_limit or (s.time_limit if worker else (s.manager_time_limit or s.time_limit)),
            mem=s.mem_per_worker if worker else None, array=array, requeue=s.requeue if worker else False,
            extra=tuple(s.sbatch_args))

    def worker_params(self) -> dict[str, Any]:
        """What the manager's Slurm fleet needs to submit worker arrays (plain data in the run spec)."""
        s = self.settings
        return {"python": sys.executable, "partition": s.partition, "account": s.account, "qos": s.qos,
                "time_limit": s.time_limit, "cpus": s.cpus_per_worker, "mem": s.mem_per_worker,
                "requeue": s.requeue, "extra": list(s.sbatch_args), "workers": s.workers,
                "poll_seconds": s.poll_seconds}

    # -- per run -----------------------------------------------------------------------------------
    def store(self, url: str) -> LocalStore:
        return LocalStore(Path(url[len("file://"):]))

    def provision(self, engine: Engine, run: models.Run) -> dict[str, Any]:
        bucket = engine.ensure(run.id, "directory", run.id, f"{run.id}/bucket", {})
        root = Path(bucket.physical_id)
        secret = root / PASSWORD_FILE
        if not secret.exists():
            tmp = root / f".{PASSWORD_FILE}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w") as fh:
                fh.write(new_password())
            tmp.replace(secret)
        extra = {"backend": "slurm", "slurm": self.worker_params(), "worker_boot_seconds": 365 * 86400.0}
        return {"store_url": LocalStore(root).url, "extra": extra, "tick_seconds": self.tick_seconds}

    def launch_manager(self, engine: Engine, run: models.Run, urls: dict[str, Any]) -> models.Resource:
        root = Path(urls["store_url"][len("file://"):])
        n = models.Resource.select().where((models.Resource.run == run.id) & (models.Resource.name == "manager")).count()
        env = {"MCC_STORE": urls["store_url"], "MCC_RUN_ID": run.id, "MCC_ROLE": "manager",
               "MCC_WORKDIR": str(root / "work" / f"manager-{n + 1}")}
        req = self._request(f"mcc-{run.id}-manager", scheduler.shell_script(env, [sys.executable, "-m", "mcc.remote.slurm_job"]),
                            str(root / "logs" / f"manager-{n + 1}.log"), array=None, worker=False)
        params = {k: v for k, v in req.__dict__.items() if k != "comment"}
        params["extra"] = list(req.extra)
        params["chdir"] = run.project_dir
        return engine.current(run, "job", f"{run.id}/manager", params, name="manager")

    def teardown(self, engine: Engine, run: models.Run) -> None:
        """Cancel the run's jobs (the manager's worker arrays found by their comment too), then record the
        scheduler's start/end times of every job of the run for `mcc analyze`."""
        rows = list(models.Resource.select().where((models.Resource.run == run.id) & (models.Resource.kind == "job")
                                                   & models.Resource.state.not_in(["deleted"])))
        if run.state in ("completed", "completed_with_failures"):  # the manager wrote final.json and is exiting
            self._await_exit([r.physical_id for r in rows if r.name == "manager" and r.physical_id])
        engine.destroy_all(rows, "run finished")
        for row in engine.sweep(run.id):
            if row.kind == "job":
                engine.destroy(row, "run finished")
        record_job_times(self.runner, run)


    def _await_exit(self, job_ids: list[str], timeout: float = 15.0) -> None:
        """Give a finishing manager job a moment to end by itself (its record then reads COMPLETED, not
        CANCELLED, and no scancel is needed); what still runs after ``timeout`` is cancelled by the caller."""
        deadline = time.monotonic() + timeout
        while job_ids and time.monotonic() < deadline:
            alive = {j.job_id for j in query_jobs(self.runner) if j.state in scheduler.ALIVE}
            job_ids = [i for i in job_ids if i in alive]
            if job_ids:
                time.sleep(0.5)


def record_job_times(runner: Runner, run: models.Run) -> None:
    """Copy the scheduler's record of the run's jobs (start/end times, CPUs, final state) into their rows' attrs,
    and give a row to every run of an array task the manager never saw running (it started and ended between
    two squeue polls), so the ledger holds every job the scheduler ran for the run."""
    rows = list(models.Resource.select().where((models.Resource.run == run.id) & (models.Resource.kind == "job")
                                               & models.Resource.physical_id.is_null(False)))
    not_before = run.created_at - CLOCK_SKEW_S  # an older job of the same id (Slurm's job ids were reset) is not ours
    runs = {k: [t for t in v if t.end is None or t.end >= not_before]
            for k, v in job_times(runner, [r.physical_id for r in rows]).items()}
    names = {r.name for r in rows}
    for row in rows:
        if (row.spec or {}).get("role") == "array":
            for task, task_runs in sorted(runs.items()):
                if task.startswith(f"{row.physical_id}_"):
                    for n, t in enumerate(task_runs):
                        name = task if n == 0 else f"{task}.{n}"  # the worker id it would have had
                        if t.start is not None and name not in names:
                            _record_unseen_task(run, row, name, task, n, t)
            continue
        t = _run_of(row, runs.get(row.physical_id) or [])
        if t is None:
            continue
        attrs = dict(row.attrs or {})
        attrs["slurm_state"] = t.state
        if t.start is not None:
            attrs.update(start_at=t.start, end_at=t.end, cpus=t.cpus)
        if attrs != (row.attrs or {}):
            models.Resource.update(attrs=attrs).where(models.Resource.id == row.id).execute()


def _run_of(row: models.Resource, runs: list[JobTimes]) -> JobTimes | None:
    """Which run of its job a row stands for: the one that started when the manager saw the task start; else, for
    a task's worker "A_T.n" (its n-th requeue), the n-th run; else (a job never requeued) the last."""
    if not runs:
        return None
    attrs = row.attrs or {}
    launched = attrs.get("launched_at")
    for t in runs:
        if t.start is not None and t.start == launched:
            return t
    if (row.spec or {}).get("role") != "worker":
        return runs[-1]
    head, _, n = row.name.rpartition(".")
    n = int(n) if head and n.isdigit() else 0
    return runs[n] if n < len(runs) else None


def _record_unseen_task(run: models.Run, array: models.Resource, name: str, task: str, restarts: int,
                        t: JobTimes) -> None:
    attrs = {"start_at": t.start, "end_at": t.end, "cpus": t.cpus, "slurm_state": t.state, "restarts": restarts}
    why = "ran between the manager's squeue polls; recorded from the scheduler's accounting at teardown"
    row = create_row(models.Resource, actor="local", reason=why, run=run.id, kind="job", name=name, backend="slurm",
                     idempotency_key=f"{run.id}/{name}", spec={"role": "worker"}, tags=dict(array.tags or {}),
                     physical_id=task, attrs=attrs, state="adopted")
    row = fire(row, "begin_delete", reason=f"ended {t.state}")
    fire(row, "deleted", reason=f"ended {t.state}", deleted_at=time.time())


def make_slurm_backend(home: Path, ledger_uuid: str, table: dict[str, Any] | None) -> SlurmBackend:
    return SlurmBackend(home, ledger_uuid, slurm_settings(table))
