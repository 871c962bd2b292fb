"""What an EC2 instance runs (from its user data): become the run's manager or one of its workers.

Queue connection: with ``queue = "manager"`` the manager starts redis-server on itself (password from
SSM Parameter Store, port open only to the run's security group) speaking TLS only: at start-up it makes a
CA and a server certificate for its private address (and 127.0.0.1/localhost), deletes the CA's key, writes
the CA certificate into the run's ``queue-ca`` SSM parameter, and publishes its address and the CA's
fingerprint (never the password, never a key) as ``queue.json`` in the bucket. Workers read the password
and that CA from SSM with their instance profile, and verify the server's certificate and address against
it. With ``queue = "elasticache"`` the address is in the spec and TLS is ElastiCache's.

Worker slots: with ``hyperthreading = false`` a worker instance (launched with SMT off, so one vCPU per
physical core) runs one worker process per core, each a worker of its own to the queue, named
``<instance id>#<slot>`` (:func:`mcc.work.queue.instance_of` maps it back); otherwise one worker process
per instance, named by the instance id.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from mcc.providers.local.tls import TlsFiles, fingerprint, make_server_tls
from mcc.remote.imds import Imds
from mcc.work.queue import SLOT_SEP
from mcc.work.runspec import LOGS, SPEC, RunSpec
from mcc.work.stores import Store, get_json, open_store, put_json

if TYPE_CHECKING:
    from mcc.providers.aws.clients import AwsContext

QUEUE_INFO = "queue.json"
PROJECT = "project/"


def download_project(store: Store, dest: Path) -> Path:
    """The user's project files, as uploaded by the launcher, into ``dest``."""
    for key in store.list(PROJECT):
        store.get_file(key, dest / key[len(PROJECT):])
    return dest


def queue_url(queue: dict[str, Any], host: str, port: int, password: str, ca_cert: Path | None = None) -> str:
    """The redis URL of the queue; with TLS the server's certificate is checked (against ``ca_cert``
    when given, else the system's CAs) and so is the address it is dialled at."""
    if not queue.get("tls"):
        return f"redis://:{quote(password, safe='')}@{host}:{port}/0"
    query = {"ssl_cert_reqs": "required", "ssl_check_hostname": "true",
             **({"ssl_ca_certs": str(ca_cert)} if ca_cert is not None else {})}
    return f"rediss://:{quote(password, safe='')}@{host}:{port}/0?{urlencode(query)}"


def start_local_queue(password: str, workdir: Path, tls: TlsFiles | None = None, port: int = 6379) -> int:
    """redis-server on this (manager) instance, reachable from the security group only (6379, or any
    free port if something already holds it); TLS only, with ``tls``."""
    from mcc.errors import ProviderError
    from mcc.providers.local.cache import start_redis

    try:
        return start_redis(password, workdir, {}, workdir / "redis.log", host="0.0.0.0", port=port, tls=tls)[1]
    except ProviderError:
        return start_redis(password, workdir, {}, workdir / "redis.log", host="0.0.0.0", tls=tls)[1]


def publish_queue_ca(ctx: AwsContext, queue: dict[str, Any], host: str, directory: Path) -> TlsFiles:
    """This manager's queue certificate: a new CA (its key deleted once it signed) and a server certificate
    for ``host`` and loopback, made in ``directory``; the CA certificate written into ``queue["ca_parameter"]``."""
    from mcc.providers.aws.parameter import overwrite_secret

    tls = make_server_tls(directory, [host, "127.0.0.1", "localhost"])
    overwrite_secret(ctx, queue["ca_parameter"], tls.ca_cert.read_text())
    return tls


def fetch_queue_ca(ctx: AwsContext, queue: dict[str, Any], info: dict[str, Any], dest: Path, timeout: float) -> Path:
    """The queue's CA certificate from SSM into ``dest``, once it is the one the manager announced in
    ``queue.json`` (a relaunched manager writes a new one)."""
    from mcc.providers.aws.parameter import read_secret

    deadline = time.monotonic() + timeout
    while True:
        pem = read_secret(ctx, queue["ca_parameter"])
        if fingerprint(pem) == info.get("ca_sha256"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(pem)
            return dest
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the CA certificate in {queue['ca_parameter']} is not the one the manager announced "
                               f"in {QUEUE_INFO} after {timeout:.0f} s")
        time.sleep(2.0)


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
    slot = os.environ.get(SLOT_ENV)
    log_file = Path(os.environ.get("HOME", "/root")) / (f"mcc-slot-{slot}.log" if slot else "mcc.log")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(handler)
    try:
        return _run_slot() if slot else _run_role(store)
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
    from mcc.providers.aws.clients import AwsContext  # here, not at the top: a Slurm job imports this module without boto3

    ctx = AwsContext.create(spec.ledger_uuid, region=region)
    from mcc.providers.aws.parameter import read_secret

    password = read_secret(ctx, queue["password_parameter"])
    if role == "manager":
        if queue["mode"] == "manager":
            host = imds.get("local-ipv4") or "127.0.0.1"
            tls = publish_queue_ca(ctx, queue, host, home / "redis" / "tls") if queue.get("tls") else None
            port = start_local_queue(password, home / "redis", tls)
            info = {"host": host, "port": port, "instance_id": instance_id}
            if tls is not None:
                info["ca_sha256"] = fingerprint(tls.ca_cert.read_text())
            put_json(store, QUEUE_INFO, info)
            os.environ["MCC_REDIS_URL"] = queue_url(queue, "127.0.0.1", port, password,
                                                ca_cert=tls.ca_cert if tls else None)
        else:
            os.environ["MCC_REDIS_URL"] = queue_url(queue, queue["host"], queue["port"], password)
        from mcc.remote import manager

        return manager.main()
    ca_cert = None
    if queue["mode"] == "manager":
        info = wait_for_queue(store, spec.idle_exit_seconds)
        if queue.get("tls"):
            ca_cert = fetch_queue_ca(ctx, queue, info, home / "queue-ca.pem", spec.idle_exit_seconds)
    else:
        info = queue
    os.environ["MCC_REDIS_URL"] = queue_url(queue, info["host"], info["port"], password, ca_cert)
    slots = worker_slots(spec)
    if slots > 1:
        return _run_slots(instance_id, slots, home / "work")
    from mcc.remote import worker

    return worker.main(notice=imds.spot_interruption)


SLOT_ENV = "MCC_WORKER_SLOT"


def worker_slots(spec: RunSpec) -> int:
    """Worker processes on this instance: one per CPU it may use when SMT is off (one per physical core), else 1."""
    aws = spec.extra.get("aws") or {}
    if aws.get("hyperthreading", True):
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _run_slot() -> int:
    """One worker process of a slotted instance (its id, queue URL and workdir come from the parent)."""
    from mcc.remote import worker

    return worker.main(notice=Imds().spot_interruption)


def _run_slots(instance_id: str, slots: int, workdir: Path) -> int:
    """Run ``slots`` worker processes side by side until each has exited (SIGTERM passed on to every one);
    the exit status is the first non-zero one, else 0."""
    logging.getLogger("instance").info("%d worker processes, one per physical core", slots)
    procs = []
    for k in range(1, slots + 1):
        env = {**os.environ, SLOT_ENV: str(k), "MCC_WORKER_ID": f"{instance_id}{SLOT_SEP}{k}",
               "MCC_WORKDIR": str(workdir / str(k))}
        procs.append(subprocess.Popen([sys.executable, "-m", "mcc.remote.instance"], env=env, stdin=subprocess.DEVNULL))
    signal.signal(signal.SIGTERM, lambda *_: [p.send_signal(signal.SIGTERM) for p in procs if p.poll() is None])
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
