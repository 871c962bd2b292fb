"""What a Slurm job of a run executes (its batch script execs ``python -m mcc.remote.slurm_job``).

MCC_ROLE=manager: start redis-server on this node (password from the bucket folder's 0600
``queue-password``, bound to the node's address), publish host and port as ``queue.json`` in the
bucket, then run the manager; redis-server lives and dies with the job.
MCC_ROLE=worker (an array task): wait for ``queue.json``, then run the worker as
``<array job id>_<task id>`` (``.<restarts>`` appended after a requeue).
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from mcc.remote.instance import QUEUE_INFO, queue_url, wait_for_queue
from mcc.work.runspec import SPEC, RunSpec
from mcc.work.stores import open_store, put_json

PASSWORD_FILE = "queue-password"


def node_address() -> str:
    """The address other nodes reach this one by (its Slurm node name resolved); MCC_BIND_ADDRESS overrides."""
    if os.environ.get("MCC_BIND_ADDRESS"):
        return os.environ["MCC_BIND_ADDRESS"]
    for name in (os.environ.get("SLURMD_NODENAME"), socket.gethostname()):
        if name:
            try:
                return socket.gethostbyname(name)
            except OSError:
                continue
    return "127.0.0.1"


def worker_id() -> str:
    wid = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return f"{wid}.{restarts}" if restarts else wid


def main() -> int:
    store = open_store(os.environ["MCC_STORE"])
    root = Path(store.url[len("file://"):])  # the Slurm backend's bucket is a shared folder
    password = (root / PASSWORD_FILE).read_text().strip()
    if os.environ["MCC_ROLE"] == "manager":
        from mcc.providers.local import processes
        from mcc.providers.local.cache import start_redis
        from mcc.remote import manager

        os.environ["MCC_WORKER_ID"] = os.environ.get("SLURM_JOB_ID", "")
        workdir = Path(os.environ["MCC_WORKDIR"])
        host = node_address()
        # dies with this process even if the job is SIGKILLed: in its own session it escapes the job's tracking
        proc, port = start_redis(password, workdir / "redis", {}, workdir / "redis.log", host=host,
                                 die_with_parent=True)
        try:
            put_json(store, QUEUE_INFO, {"host": host, "port": port, "job_id": os.environ.get("SLURM_JOB_ID")})
            os.environ["MCC_REDIS_URL"] = queue_url({}, host, port, password)
            return manager.main()
        finally:
            processes.terminate(proc, grace=2.0)
    from mcc.remote import worker

    wid = worker_id()
    os.environ["MCC_WORKER_ID"] = wid
    os.environ["MCC_WORKDIR"] = str(root / "work" / wid)
    spec = RunSpec.from_json(store.get_bytes(SPEC) or b"{}")
    info = wait_for_queue(store, spec.idle_exit_seconds)
    os.environ["MCC_REDIS_URL"] = queue_url({}, info["host"], info["port"], password)
    return worker.main()


if __name__ == "__main__":
    sys.exit(main())
