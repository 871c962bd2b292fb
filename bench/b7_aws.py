"""B7 — AWS API efficiency (emulated cloud): API calls per manager supervision tick, 10 vs 100 workers.

The real manager (``mcc.remote.manager.Manager`` with its real ``Ec2Fleet`` and an ``S3Store``)
against ``moto_server`` behind the test harness's fault proxy (tests/aws/harness), with a real
redis-server as its queue. For each fleet size N the manager seeds the queue, launches N worker
instances (one RunInstances, N instance records in the bucket: start-up, not counted), and then
``Manager.tick()`` runs TICKS times. Before every tick each of the N workers, on a Redis connection of its
own, heartbeats and acks one subproblem while claiming the next (as real workers do, through
``mcc.work.queue``; the ack carries the key of the batch object it stored first, through a client of its
own), so every tick has fresh queue events to journal, N live instances to check, progress to publish
and N results for the manager's incremental combine to fetch and append. Also reported per tick: the manager's CPU (the tick's thread time) and redis-server's (INFO cpu).

Counted per tick: every botocore API call of the manager's clients (the S3 client of its store and
the EC2 client of its fleet), with a ``before-call`` hook registered on each client's
``meta.events``; cross-checked against the requests the proxy forwarded to moto in the same tick
(so a call made through a client without the hook, or retried, would show). The GETs of result objects
(``results/``: the incremental combine fetching each acked batch once) are counted apart: they are one
per acked batch by design, the results having to reach the manager. Target: the supervision counts
(all the others) at 10 and 100 workers are equal (O(1) in the number of workers).

Also checked: the manager's CPU per tick at the larger size is at most CPU_TARGET (its one
DescribeInstances asks only for workers that are not running, so it does not parse the whole fleet), and a
worker terminated behind the manager's back after the counted ticks (what a spot interruption does) is
forgotten at the very next tick.

Size: the larger fleet (default 100; the smaller is always 10).
"""
from __future__ import annotations

import logging
import os
import shutil
import statistics
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bench import Context, Row
from bench.harness import BENCH_UUID, REPO, redis_server, tempdir

ID = "B7"
TITLE = "AWS API efficiency: calls and CPU per manager tick, 10 vs N workers (100; 1,000 with --size 1000)"
DEFAULT_SIZE = 100
SMOKE_SIZE = 20  # python -m bench --smoke: does it run here (figures not comparable)
SMALL = 10
TICKS = 5
CPU_TARGET = 0.050  # seconds of the manager's CPU per tick (issue 13: at 1,000 workers)
REGION = "us-east-1"


@contextmanager
def emulated_cloud(root: Path) -> Iterator[Any]:
    """moto_server + the harness's fault proxy; the AWS environment pointed at the proxy meanwhile."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.aws.harness.moto_server import MotoServer
    from tests.aws.harness.proxy import FaultProxy

    if not shutil.which("moto_server"):
        raise RuntimeError("B7 needs moto_server: pip install -e '.[bench]' (moto[server])")
    server = MotoServer(root).start()
    proxy = FaultProxy(server.url).start()
    env = {"AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_CONFIG_FILE": str(root / "no-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-credentials")}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    try:
        yield proxy
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proxy.stop()
        server.stop()


def measure(n_workers: int, proxy: Any, server: Any, root: Path) -> dict[str, Any]:
    """Start a manager with ``n_workers`` EC2 workers; count the API calls of TICKS ticks."""
    import boto3

    from mcc.work.queue import Queue
    from mcc.remote.manager import Manager
    from mcc.remote.runtime import Runtime
    from mcc.work.runspec import SPEC, RunSpec, make_chunks
    from mcc.work.stores import open_store
    from tests.aws.harness.moto_server import ensure_al2023_parameter

    run_id = f"b7-{n_workers}-{uuid.uuid4().hex[:6]}"
    ec2, ssm, s3 = (boto3.client(name, region_name=REGION) for name in ("ec2", "ssm", "s3"))
    ami = ensure_al2023_parameter(ssm, ec2, proxy)
    bucket = f"mcc-bench-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    template = ec2.create_launch_template(
        LaunchTemplateName=run_id, LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    subproblems = n_workers * (TICKS + 2)
    spec = RunSpec(
        run_id=run_id, ledger_uuid=BENCH_UUID, n_points=subproblems, chunks=make_chunks(subproblems, 1),
        entry_kind="function", entry_target="entry:compute", project_dir=str(root), workers=n_workers,
        max_attempts=3, point_timeout=60.0, lease_seconds=600.0, has_combiner=False, tick_seconds=0.5,
        extra={"backend": "aws", "aws": {
            "region": REGION, "wheel": "materialsCloudCompute-0.1.0-py3-none-any.whl", "requirements": [],
            "max_lifetime_seconds": 3600, "launch_template_id": template, "worker_type": "t3.micro",
            "spot": False, "subnet_id": None}},
    )
    store = open_store(f"s3://{bucket}/runs/{run_id}")
    store.put_bytes(SPEC, spec.to_json())
    client = server.client()
    workdir = root / run_id
    workdir.mkdir(parents=True)
    manager = Manager(Runtime(spec, store, client, Queue(client, run_id), workdir))
    manager._acquire_lock()
    manager._ensure_seeded()
    workers = manager.fleet.launch_workers(n_workers)
    if len(workers) != n_workers:
        raise RuntimeError(f"launched {len(workers)} of {n_workers} workers")
    for wid in workers:
        manager.launched_at[wid] = time.time()

    calls: Counter[str] = Counter()
    fetched: Counter[str] = Counter()

    def count(model: Any, params: Any = None, **_: Any) -> None:
        if model.name == "GetObject" and "/results/" in str((params or {}).get("url_path", "")):
            fetched["results"] += 1
            return
        calls[f"{model.service_model.service_name}:{model.name}"] += 1

    clients = [store.s3, *manager.fleet.ctx._clients.values()]  # every client the manager has made
    for c in clients:
        c.meta.events.register("before-call", count)
    queues = {wid: Queue(server.client(), run_id) for wid in workers}  # one connection per worker, as on EC2
    held: dict[str, list[int]] = {wid: [] for wid in workers}
    per_tick: list[dict[str, Any]] = []
    workers_store = open_store(f"s3://{bucket}/runs/{run_id}")  # the workers' own client: not counted
    try:
        for tick in range(TICKS):
            for wid in workers:  # each worker heartbeats, stores its batch, acks it and claims one more
                queues[wid].heartbeat(wid, held[wid], spec.lease_seconds)
                key = None
                if held[wid]:
                    key = f"results/{wid}-b7-{tick:06d}.pack"
                    workers_store.put_bytes(key, batch_object(root, held[wid]))
                held[wid] = queues[wid].ack_and_claim(wid, held[wid], 1, spec.lease_seconds, key=key)[1]
            calls.clear()
            fetched.clear()
            proxy.reset_counts()
            redis_before = redis_cpu(server)
            t0, cpu0 = time.perf_counter(), time.thread_time()
            _, failure = manager.tick()
            seconds, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
            if failure:
                raise RuntimeError(f"the manager's tick failed the run: {failure}")
            per_tick.append({"hooked": sum(calls.values()), "fetched": fetched["results"],
                             "proxy": proxy.count() - fetched["results"], "calls": dict(calls),
                             "seconds": seconds, "cpu_s": cpu, "redis_cpu_s": redis_cpu(server) - redis_before,
                             "alive": manager.alive_workers})
        alive = manager.alive_workers
        # a worker terminated behind the manager's back (what a spot interruption does): seen at the next tick?
        victim = workers[0]
        ec2.terminate_instances(InstanceIds=[victim])
        manager.tick()
        noticed = victim not in manager.fleet.known and victim not in manager.q.instance_heartbeats()
    finally:
        for c in clients:
            c.meta.events.unregister("before-call", count)
        manager.fleet.terminate_all("benchmark over")
        next(iter(queues.values())).delete()
        for q in queues.values():
            q.client.close()
    return {"workers": n_workers, "alive": alive, "noticed": noticed, "ticks": per_tick,
            "hooked": statistics.median(t["hooked"] for t in per_tick),
            "proxy": statistics.median(t["proxy"] for t in per_tick),
            "fetched": statistics.median(t["fetched"] for t in per_tick),
            "appended": manager.incremental.appended if manager.incremental is not None else 0,
            "calls": per_tick[-1]["calls"], "tick_s": statistics.median(t["seconds"] for t in per_tick),
            "cpu_s": statistics.median(t["cpu_s"] for t in per_tick),
            "redis_cpu_s": statistics.median(t["redis_cpu_s"] for t in per_tick)}


def batch_object(root: Path, subs: list[int]) -> bytes:
    """The batch object a worker stores for one-point subproblems ``subs`` (a no-op entry: row = [point])."""
    import numpy as np

    from mcc.remote.results import ResultWriter
    from mcc.remote.worker import _write_result
    from mcc.work import pack

    path = root / f"batch-{uuid.uuid4().hex}.pack"
    writer = ResultWriter(_write_result)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pack.seal(fd, [(s, None, *writer.append(fd, np.array([[float(s)]]), s, 1, lambda: root / "scratch")) for s in subs])
        return path.read_bytes()
    finally:
        os.close(fd)
        path.unlink()


def redis_cpu(server: Any) -> float:
    """CPU seconds the queue's redis-server has used (INFO's used_cpu_user + used_cpu_sys)."""
    info = server.client().info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """The manager's (and botocore's) log records into ``path``, not into the table on stdout: a root
    handler present makes the manager's ``logging.basicConfig`` a no-op."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run(size: int | None, ctx: Context) -> list[Row]:
    big = size or DEFAULT_SIZE
    with tempdir("b7") as root, emulated_cloud(root) as proxy, redis_server(root) as server, \
            logs_to(root / "manager.log"):
        small = measure(SMALL, proxy, server, root)
        ctx.log(f"  {SMALL} workers: {small['hooked']} calls per tick (proxy {small['proxy']}): {small['calls']}")
        large = measure(big, proxy, server, root)
        ctx.log(f"  {big} workers: {large['hooked']} calls per tick (proxy {large['proxy']}): {large['calls']}")
    equal = small["hooked"] == large["hooked"] and small["proxy"] == large["proxy"] == large["hooked"]
    equal = equal and all(t["hooked"] == small["hooked"] for t in small["ticks"] + large["ticks"])
    seen = all(m["alive"] == m["workers"] for m in (small, large))
    noticed = small["noticed"] and large["noticed"]
    cpu_ok = large["cpu_s"] <= CPU_TARGET
    breakdown = ", ".join(f"{k} {v}" for k, v in sorted(large["calls"].items()))

    def fmt(m: dict[str, Any]) -> str:
        return f"{m['hooked']:g} calls/tick at {m['workers']} workers"

    return [Row(
        "B7", f"AWS API calls per manager supervision tick (real Manager.tick with its EC2 fleet and S3 store, "
              f"moto_server), {SMALL} vs {big} workers; every tick journals new events; {TICKS} ticks each",
        fmt(large), fmt(small), f"{large['hooked'] / small['hooked']:.2f}×" if small["hooked"] else "—",
        f"equal counts (O(1) in workers); manager CPU ≤ {CPU_TARGET * 1000:.0f} ms per tick",
        equal and seen and noticed and cpu_ok,
        notes=f"per tick: {breakdown} (botocore before-call hooks; the proxy forwarded the same: "
              f"{small['proxy']:g} and {large['proxy']:g}); every tick of both fleets the same count: "
              f"{'yes' if equal else 'NO'}; workers seen alive {small['alive']}/{SMALL}, {large['alive']}/{big}; "
              f"a worker terminated behind the manager's back forgotten at the next tick: "
              f"{'yes' if noticed else 'NO'}; "
              f"tick {small['tick_s'] * 1000:.0f} ms vs {large['tick_s'] * 1000:.0f} ms wall (the emulator's "
              f"DescribeInstances, which filters every instance it holds, dominates), of it the manager's own CPU "
              f"{small['cpu_s'] * 1000:.0f} ms vs {large['cpu_s'] * 1000:.0f} ms "
              f"({large['cpu_s'] / small['cpu_s']:.1f}×; thread time of the tick, median of {TICKS}; "
              f"target ≤ {CPU_TARGET * 1000:.0f} ms: {'yes' if cpu_ok else 'NO'}) and redis-server's "
              f"{small['redis_cpu_s'] * 1000:.0f} ms "
              f"vs {large['redis_cpu_s'] * 1000:.0f} ms per tick; {big} worker connections heartbeat, ack and claim "
              f"before every tick; apart from these, the incremental combine fetched {small['fetched']:g} vs "
              f"{large['fetched']:g} result objects per tick (one per acked batch, in its download threads: outside "
              f"the thread time above) and had appended "
              f"{small['appended']} and {large['appended']} results by the last tick",
        data={"small": small, "large": large})]
