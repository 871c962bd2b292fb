"""What an EC2 instance runs (from its user data): become the run's manager or one of its workers.

Queue connection: with ``queue = "manager"`` the manager starts redis-server on itself (password from
SSM Parameter Store, port open only to the run's security group) and publishes its address (never the
password) as ``queue.json`` in the bucket; with ``queue = "elasticache"`` the address is in the spec
and TLS is used. Workers read the password from SSM with their instance profile.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mcc.providers.aws.clients import AwsContext
from mcc.remote.imds import Imds
from mcc.work.runspec import LOGS, SPEC, RunSpec
from mcc.work.stores import Store, get_json, open_store, put_json

QUEUE_INFO = "queue.json"
PROJECT = "project/"


def download_project(store: Store, dest: Path) -> Path:
    """The user's project files, as uploaded by the launcher, into ``dest``."""
    for key in store.list(PROJECT):
        store.get_file(key, dest / key[len(PROJECT):])
    return dest


def queue_url(queue: dict[str, Any], host: str, port: int, password: str) -> str:
    scheme = "rediss" if queue.get("tls") else "redis"
    return f"{scheme}://:{quote(password, safe='')}@{host}:{port}/0"


def start_local_queue(password: str, workdir: Path, port: int = 6379) -> int:
    """redis-server on this (manager) instance, reachable from the security group only (6379, or any
    free port if something already holds it)."""
    from mcc.errors import ProviderError
    from mcc.providers.local.cache import start_redis

    try:
        return start_redis(password, workdir, {}, workdir / "redis.log", host="0.0.0.0", port=port)[1]
    except ProviderError:
        return start_redis(password, workdir, {}, workdir / "redis.log", host="0.0.0.0")[1]


def wait_for_queue(store: Store, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = get_json(store, QUEUE_INFO)
        if info:
            return info
        time.sleep(2.0)
    raise RuntimeError(f"no {QUEUE_INFO} in {store.url} after {timeout:.0f} s: the manager did not start its queue")


def main() -> int:
    """Run the role; the log goes to stdout (the console) and, at exit, into the bucket under logs/."""
    store = open_store(os.environ["MCC_STORE"])
    log_file = Path(os.environ.get("HOME", "/root")) / "mcc.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(handler)
    try:
        return _run_role(store)
    finally:
        handler.flush()
        name = f"{os.environ['MCC_ROLE']}-{os.environ.get('MCC_WORKER_ID') or os.getpid()}.log"
        try:
            store.put_file(f"{LOGS}{name}", log_file)
        except Exception as exc:  # noqa: BLE001 - the log upload must never hide the real exit status
            print(f"could not upload the log: {exc}", file=sys.stderr)


def _run_role(store: Store) -> int:
    role = os.environ["MCC_ROLE"]
    imds = Imds()
    instance_id = imds.get("instance-id") or "unknown"
    os.environ["MCC_WORKER_ID"] = instance_id
    region = imds.get("placement/region") or os.environ.get("AWS_REGION", "")
    spec = RunSpec.from_json(store.get_bytes(SPEC) or b"{}")
    home = Path(os.environ.get("HOME", "/root"))
    project = download_project(store, home / "project")
    os.environ["MCC_PROJECT_DIR"] = str(project)
    os.environ["MCC_WORKDIR"] = str(home / "work")
    queue = spec.extra["queue"]
    ctx = AwsContext.create(spec.ledger_uuid, region=region)
    from mcc.providers.aws.parameter import read_secret

    password = read_secret(ctx, queue["password_parameter"])
    if role == "manager":
        if queue["mode"] == "manager":
            port = start_local_queue(password, home / "redis")
            host = imds.get("local-ipv4") or "127.0.0.1"
            put_json(store, QUEUE_INFO, {"host": host, "port": port, "instance_id": instance_id})
            os.environ["MCC_REDIS_URL"] = queue_url(queue, "127.0.0.1", port, password)
        else:
            os.environ["MCC_REDIS_URL"] = queue_url(queue, queue["host"], queue["port"], password)
        from mcc.remote import manager

        return manager.main()
    info = wait_for_queue(store, spec.idle_exit_seconds) if queue["mode"] == "manager" else queue
    os.environ["MCC_REDIS_URL"] = queue_url(queue, info["host"], info["port"], password)
    from mcc.remote import worker

    return worker.main(notice=imds.spot_interruption)


if __name__ == "__main__":
    sys.exit(main())
