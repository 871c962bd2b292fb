"""What a manager or worker process is given: the bucket, the queue and its identity, from the environment.

MCC_STORE      bucket URL (file:///… locally, s3://… on AWS)
MCC_REDIS_URL  redis://:password@host:port/0 (rediss://…?ssl_ca_certs=… for TLS: remote/instance.queue_url)
MCC_RUN_ID     the run
MCC_WORKER_ID  this process's worker id (workers only)
MCC_WORKDIR    scratch directory for partial results (default: a temp dir)
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis

from mcc.work.points_file import PointsFile
from mcc.work.queue import Queue
from mcc.work.runspec import POINTS, SPEC, RunSpec
from mcc.work.stores import Store, open_store


@dataclass
class Runtime:
    spec: RunSpec
    store: Store
    redis: redis.Redis
    queue: Queue
    workdir: Path

    def points(self) -> PointsFile:
        """The run's points, read a chunk at a time (:class:`PointsFile`), never a copy of them all."""
        local = self.store.local_path(POINTS)
        if local is None:
            local = self.workdir / "points.npy"
            if not self.store.get_file(POINTS, local):
                raise RuntimeError(f"the bucket {self.store.url} has no {POINTS}")
        return PointsFile(local)


def connect(role: str) -> Runtime:
    """Open the store and the queue named by the environment, and read the run spec."""
    store = open_store(os.environ["MCC_STORE"])
    data = store.get_bytes(SPEC)
    if data is None:
        raise RuntimeError(f"the bucket {store.url} has no {SPEC}")
    spec = RunSpec.from_json(data)
    if os.environ.get("MCC_PROJECT_DIR"):  # on an instance the project was downloaded next to it
        spec = dataclasses.replace(spec, project_dir=os.environ["MCC_PROJECT_DIR"])
    client = redis.Redis.from_url(
        os.environ["MCC_REDIS_URL"], socket_timeout=30, socket_connect_timeout=10, health_check_interval=30
    )
    workdir = Path(os.environ.get("MCC_WORKDIR") or tempfile.mkdtemp(prefix=f"mcc-{role}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Runtime(spec, store, client, Queue(client, spec.run_id), workdir)


def setup_logging(name: str) -> logging.Logger:
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )
    return logging.getLogger(name)
