"""The EC2 fleet under stress, end to end through the emulated cloud (see tests/aws/harness).

Spot interruptions of workers, the loss of the manager instance, capacity/quota errors and throttling
on the manager's own calls, and `mcc clean` against resources planted behind the ledger's back.

Each run is a real `mcc run --backend aws`: the laptop process provisions and launches the manager
instance, the manager launches worker instances, everything computes locally under the instance
runner. Progress is followed the way the laptop does it: ``progress.json`` under the run's S3 prefix.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.aws.conftest import aws_toml
from tests.conftest import combined_rows, latest_run_id, ledger_uuid, mcc_json, wait_for

pytestmark = pytest.mark.slow

SLOW_POINT = "time.sleep(0.05)"  # 4 points per subproblem: 0.2 s per subproblem


# -- helpers -------------------------------------------------------------------------------------------------------
class RunProcess:
    """`mcc run PROJECT --json` in the background (output to files: no pipe can fill up and block it)."""

    def __init__(self, project: Path, home: Path, logdir: Path) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logdir / "run.stdout", logdir / "run.stderr"
        env = {**os.environ, "MCC_HOME": str(home), "COLUMNS": "200"}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "mcc.cli", "run", str(project), "--json"], env=env,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"mcc run exited early ({self.proc.returncode}):\n{self.output()}")

    def output(self) -> str:
        return f"stdout:\n{self.out_path.read_text()}\nstderr:\n{self.err_path.read_text()[-5000:]}"

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # killed at teardown, after its stacks are dumped
            raise AssertionError(f"mcc run did not finish within {timeout:.0f} s:\n{self.output()}") from None
        assert self.proc.returncode == 0, self.output()
        return json.loads(self.out_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


class RunView:
    """What the test sees of a run in the cloud: its S3 prefix, progress, instances, queue."""

    def __init__(self, cloud, home: Path, run: RunProcess) -> None:
        self.cloud, self.home, self.run = cloud, home, run
        self.run_id: str = self._wait(lambda: latest_run_id(home), 60, "the run to be recorded")
        self.bucket, self.prefix = self._wait(self._store, 90, "the run's bucket")
        self._redis = None

    def _wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        def check() -> Any:
            value = condition()
            if not value:
                self.run.check_alive()
            return value

        return wait_for(check, timeout, what)

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        return self._wait(condition, timeout, what)

    def _store(self) -> tuple[str, str] | None:
        with sqlite3.connect(self.home / "ledger.db", timeout=30) as con:
            row = con.execute("select spec from runs where id=?", (self.run_id,)).fetchone()
        url = json.loads(row[0]).get("store_url") if row and row[0] else None
        if not url:
            return None
        parts = urlsplit(url)
        return parts.netloc, parts.path.lstrip("/")

    def s3_json(self, name: str) -> dict[str, Any] | None:
        try:
            body = self.cloud.client("s3").get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(body)

    def journal(self) -> list[dict[str, Any]]:
        """Every queue event the manager journaled into the bucket (claimed, acked, preempted, expired…)."""
        s3, events = self.cloud.client("s3"), []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "journal/"):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read().decode()
                events += [json.loads(line) for line in body.splitlines() if line.strip()]
        return events

    def progress(self) -> dict[str, Any]:
        """progress.json (phase, progress counters, workers), {} before the manager's first publish."""
        return self.s3_json("progress.json") or {}

    def done_points(self) -> int:
        return (self.progress().get("progress") or {}).get("done_points", 0)

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        filters = [{"Name": "tag:mcc:run", "Values": [self.run_id]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        reply = self.cloud.client("ec2").describe_instances(Filters=filters)
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def workers(self, state: str | None = "running") -> list[str]:
        return sorted(i["InstanceId"] for i in self.instances(**{"mcc:role": "worker"})
                      if state is None or i["State"]["Name"] == state)

    def managers(self) -> list[dict[str, Any]]:
        return sorted(self.instances(Name="manager"), key=lambda i: i["LaunchTime"])

    def state_of(self, instance_id: str) -> str:
        reply = self.cloud.client("ec2").describe_instances(InstanceIds=[instance_id])
        return reply["Reservations"][0]["Instances"][0]["State"]["Name"]

    def ssm(self, name: str) -> str:
        return self.cloud.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]

    def lease_owners(self) -> set[str]:
        """Workers holding a lease right now, read from the queue on the manager instance (TLS, verified
        against the run's CA, as a worker connects)."""
        import redis

        if self._redis is None:
            info, spec = self.s3_json("queue.json"), self.s3_json("spec.json")
            if not info or not spec:
                return set()
            queue = spec["extra"]["queue"]
            self._redis = redis.Redis(host=info["host"], port=int(info["port"]), password=self.ssm(queue["password_parameter"]),
                                      socket_timeout=5, socket_connect_timeout=5, ssl=True, ssl_cert_reqs="required",
                                      ssl_ca_data=self.ssm(queue["ca_parameter"]), ssl_check_hostname=True)
        try:
            return {v.decode() for v in self._redis.hvals(f"mcc:{{{self.run_id}}}:owner")}
        except Exception:  # noqa: BLE001 - the queue may be momentarily unreachable; the caller polls
            self._redis = None
            return set()

    def holder(self, sub: int) -> str | None:
        """The worker holding the lease of subproblem ``sub`` right now (None when nobody does)."""
        self.lease_owners()  # connects
        try:
            value = self._redis.hget(f"mcc:{{{self.run_id}}}:owner", sub) if self._redis is not None else None
        except Exception:  # noqa: BLE001
            self._redis = None
            return None
        return value.decode() if value else None

    def booted_worker_holding_a_lease(self, exclude: set[str]) -> str | None:
        booted = set(self.cloud.runner.booted())
        running = set(self.workers())
        for wid in sorted(self.lease_owners() - exclude):
            if wid in booted and wid in running:
                return wid
        return None

    def consoles(self, tail: int = 3000) -> str:
        return "\n".join(f"===== {iid}\n{self.cloud.runner.console(iid)[-tail:]}" for iid in self.cloud.runner.booted())


def ledger_rows(home: Path, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(home / "ledger.db", timeout=30) as con:
        return con.execute(sql, args).fetchall()


def assert_exactly_once(result_path: str, n: int) -> None:
    rows = combined_rows(result_path)
    assert rows.shape == (n, 3), rows.shape
    order = np.argsort(rows[:, 0])
    np.testing.assert_array_equal(rows[order, 0], np.arange(n, dtype=float))
    np.testing.assert_allclose(rows[order, 2], 2.0 * np.arange(n) + 0.5 * np.arange(n))


def subproblem_states(home: Path, run_id: str) -> dict[str, int]:
    return dict(ledger_rows(home, "select state, count(*) from subproblems where run_id=? group by state", run_id))


def relaunches(home: Path, run_id: str) -> int:
    return ledger_rows(home, "select count(*) from events where entity='run' and entity_id=? and trigger='relaunch'",
                       run_id)[0][0]


@pytest.fixture
def start_run(cloud, mcc_home: Path, make_project, tmp_path: Path):
    """start_run(n, body=…, **aws_keys) → RunView of a background `mcc run`; killed at teardown if still running."""
    started: list[RunView] = []

    def start(n: int, body: str = SLOW_POINT, **aws: Any) -> RunView:
        project = make_project(n, body=body, toml=aws_toml(run={"chunk_size": 4}, **aws))
        proc = RunProcess(project, mcc_home, tmp_path / "logs")
        try:
            view = RunView(cloud, mcc_home, proc)
        except BaseException:
            proc.stop()
            raise
        started.append(view)
        return view

    yield start
    for view in started:
        failed = view.run.proc.poll() is None or view.run.proc.returncode != 0
        if failed:
            print(view.run.output())
            print(view.consoles())
            dump_stacks([view.run.proc.pid, *cloud.runner.marked_pids()])
        view.run.stop()


def dump_stacks(pids: list[int]) -> None:
    """Where each live Python process of the run is stuck (py-spy, when installed): for a hang's report."""
    import shutil

    if not shutil.which("py-spy"):
        return
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "python" not in os.path.basename(exe):
            continue
        dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
        print(f"===== py-spy dump of {pid}\n{dump.stdout[-6000:]}{dump.stderr[-1000:]}")


# -- 1. spot interruptions ------------------------------------------------------------------------------------------
def test_spot_interruptions_are_preemptions_not_failures(cloud, start_run) -> None:
    """Two spot workers interrupted at different moments, each in the middle of a subproblem: the lease goes
    back as a preemption (no attempt spent, no failure), a replacement is launched, and the combined file
    holds every point exactly once.

    The bulk of the points take 0.05 s (chunks of 4); subproblems 16 and 44 take 0.7 s per point. Each victim
    is the worker that has just claimed one of those, so the notice (seen at its next heartbeat, within
    lease/3 = 1.3 s) certainly finds the subproblem unfinished: with 0.2 s subproblems a notice lands
    between two of them about half the time, and the worker then rightly has nothing to hand back.
    """
    n, slow = 240, (16, 44)
    body = f"time.sleep(0.7 if i // 4 in {slow} else 0.05)"
    t0 = time.monotonic()
    view = start_run(n, body=body, spot=True)
    victims, at = [], []
    for sub in slow:
        victim = view.wait(lambda: view.holder(sub), 120, f"a worker to claim the slow subproblem {sub}")
        at.append(view.done_points())
        print(f"\n[spot] interrupt {victim} (holding subproblem {sub}) at {time.time():.3f}, {at[-1]} points done")
        cloud.runner.interrupt(victim, notice_seconds=4.0)  # EC2 gives 120 s; 4 s is plenty here
        victims.append(victim)
        view.wait(lambda: view.state_of(victim) == "terminated", 30, f"the interrupted {victim} to be terminated")

    out = view.run.result(timeout=180)
    elapsed = time.monotonic() - t0
    assert out["state"] == "completed" and out["done"] == n, out
    assert_exactly_once(out["result"], n)

    p = view.s3_json("final.json")["progress"]
    workers = view.workers(state=None)
    events = view.journal()
    handed_back = {w: sorted(int(e["sub"]) for e in events if e["type"] == "preempted" and e["worker"] == w)
                   for w in victims}
    expired = [e for e in events if e["type"] == "expired"]
    print(f"[spot] run {view.run_id}: interrupted {victims[0]} at {at[0]} points and {victims[1]} at {at[1]}; "
          f"handed back {handed_back}; preemptions={p['preemptions']} failures={p['failures']} "
          f"expired={len(expired)} done={p['done_points']}/{n} worker instances={len(workers)} "
          f"relaunches={relaunches(view.home, view.run_id)} profile-gap closed={len(cloud.runner.profile_gap_closed)} "
          f"elapsed={elapsed:.1f}s timings={out['timings']}")
    assert victims[0] != victims[1]
    assert [handed_back[w] for w in victims] == [[slow[0]], [slow[1]]], handed_back
    assert p["preemptions"] == 2, p
    assert p["failures"] == 0 and not expired, (p, expired)  # a preemption is not a failure
    assert p["dead"] == 0 and p["done_points"] == n
    assert len(workers) >= 4, workers  # two originals + a replacement for each interrupted one
    states = subproblem_states(view.home, view.run_id)
    assert states == {"done": n // 4}, states
    attempts = ledger_rows(view.home, "select max(attempts) from subproblems where run_id=?", view.run_id)[0][0]
    assert not attempts, f"a preemption spent an attempt (max attempts {attempts})"
    # every worker is priced as launched: its zone's spot price and the type's vCPUs, asked of EC2 by the manager
    priced = [json.loads(a) for (a,) in ledger_rows(
        view.home, "select attrs from resources where run_id=? and kind='instance' and name!='manager'", view.run_id)]
    assert len(priced) == len(workers), priced
    assert all(a["spot"] and a["price_per_hour"] > 0 and a["vcpus"] == 2 and a["region"] == cloud.region
               for a in priced), priced


# -- 1b. the queue on the manager speaks TLS only ------------------------------------------------------------------
def test_queue_on_the_manager_is_tls_only_verified_against_the_published_ca(cloud, start_run) -> None:
    """Issue 15 §4: the manager's redis-server refuses plaintext; a client trusting the CA the manager wrote
    into SSM (the run's tracked ``queue-ca`` parameter) and checking the address gets in, one trusting another
    CA does not. The CA's key is gone, the server key stays on the manager (not in S3, SSM or a console)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from mcc.providers.local.tls import fingerprint
    from tests.aws.test_run_aws import everything_written

    view = start_run(24)
    info = view.wait(lambda: view.s3_json("queue.json"), 120, "the manager to publish its queue")
    queue = view.s3_json("spec.json")["extra"]["queue"]
    assert queue["mode"] == "manager" and queue["tls"] is True
    ca_pem = view.ssm(queue["ca_parameter"])
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in ca_pem
    assert fingerprint(ca_pem) == info["ca_sha256"]
    password = view.ssm(queue["password_parameter"])

    def client(**kw: Any) -> redis.Redis:
        return redis.Redis(info["host"], int(info["port"]), password=password, socket_timeout=10,
                           socket_connect_timeout=10, retry=Retry(NoBackoff(), 0), **kw)

    verified = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    assert client(ssl_ca_data=ca_pem, **verified).ping()
    with pytest.raises(redis.ConnectionError):
        client().ping()  # plaintext: the TLS port drops it
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client(ssl_ca_certs=cloud.ca_file, **verified).ping()  # the harness's CA: not the run's

    (manager,) = [m["InstanceId"] for m in view.managers()]
    tls_dir = cloud.runner.workdir / manager / "redis" / "tls"
    server_key = (tls_dir / "server.key").read_text()
    assert "PRIVATE KEY" in server_key and not (tls_dir / "ca.key").exists()
    out = view.run.result(timeout=240)
    assert out["state"] == "completed" and out["done"] == 24, out
    texts = everything_written(cloud) + [cloud.runner.console(i) for i in cloud.runner.booted()]
    key_body = server_key.split("-----")[2].strip().splitlines()[0]
    assert not [t for t in texts if key_body in t]
    rows = ledger_rows(view.home, "select physical_id, state from resources where run_id=? and kind='parameter'",
                       view.run_id)
    assert (queue["ca_parameter"], "deleted") in rows, rows  # tracked, and gone with the run
    assert cloud.authz.allowed[(f"role mcc-{view.run_id}", "ssm:PutParameter")] == 1  # judged by the evaluator


# -- 2. the manager instance lost mid-run ---------------------------------------------------------------------------
MANAGER_LOSS_POINTS = 240
_manager_loss: dict[str, Any] = {}  # one run, two verdicts: what the run showed, as plain data


@pytest.fixture
def manager_loss(cloud, start_run) -> dict[str, Any]:
    """Run once per session (the first test asking does it; the other reads the record): a sweep whose manager
    instance is terminated mid-run, and everything observed about it once `mcc run` returned."""
    if "error" in _manager_loss:
        pytest.fail(f"the shared manager-loss run failed in an earlier test: {_manager_loss['error']}")
    if not _manager_loss:
        try:
            _manager_loss.update(_run_manager_loss(cloud, start_run))
        except BaseException as exc:
            _manager_loss["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            raise
    return _manager_loss


def _run_manager_loss(cloud, start_run) -> dict[str, Any]:
    n = MANAGER_LOSS_POINTS
    t0 = time.monotonic()
    view = start_run(n)
    view.wait(lambda: view.done_points() >= 32, 120, "the first points to be done")
    (manager,) = [m["InstanceId"] for m in view.managers() if m["State"]["Name"] == "running"]
    old_workers = view.workers()
    at_loss, lost_at = view.done_points(), time.time()
    cloud.runner.terminate(manager)

    out = view.run.result(timeout=240)
    elapsed = time.monotonic() - t0
    managers = [m["InstanceId"] for m in view.managers()]
    events = view.journal()
    stuck = ledger_rows(view.home, "select `index`, state, worker from subproblems where run_id=? and state!='done' "
                                   "order by `index`", view.run_id)
    record = {
        "n": n, "out": out, "run_id": view.run_id, "manager": manager, "managers": managers,
        "old_workers": old_workers, "old_worker_states": {w: view.state_of(w) for w in old_workers},
        "manager_states": {m: view.state_of(m) for m in managers},
        "new_manager_console": "\n".join(cloud.runner.console(m) for m in managers if m != manager),
        "manager_rows": ledger_rows(view.home, "select idempotency_key, physical_id, state from resources "
                                               "where run_id=? and name='manager' order by id", view.run_id),
        "relaunches": relaunches(view.home, view.run_id), "progress": view.s3_json("final.json")["progress"],
        "rows": combined_rows(out["result"]) if out.get("result") else None,
        "ledger_states": subproblem_states(view.home, view.run_id), "stuck": stuck,
        "stuck_events": {sub: [(e["type"], e["worker"]) for e in events if int(e["sub"]) == sub] for sub, _, _ in stuck},
        "stray": [(e["type"], int(e["sub"]), e["worker"]) for e in events
                  if e["worker"] in old_workers and float(e["t"]) > lost_at],
    }
    p = record["progress"]
    print(f"\n[manager] run {view.run_id}: manager {manager} terminated at {at_loss} points; "
          f"relaunches={record['relaunches']} managers={managers} old workers={old_workers} "
          f"preemptions={p['preemptions']} failures={p['failures']} done={p['done_points']}/{n} elapsed={elapsed:.1f}s "
          f"timings={out['timings']}")
    print(f"[manager] events of the old workers after the loss (they reached the new queue): {record['stray']}")
    print(f"[manager] ledger subproblem states after the run: {record['ledger_states']}; not done: {stuck}; "
          f"their journal events: {record['stuck_events']}")
    return record


def test_manager_terminated_mid_run_is_relaunched_and_run_completes(manager_loss) -> None:
    """The manager instance (and the queue on it) dies: the laptop relaunches it, the new manager rebuilds the
    queue from the results in S3 and stops the workers bound to the lost queue; every point exactly once."""
    r, n = manager_loss, manager_loss["n"]
    assert r["out"]["state"] == "completed" and r["out"]["done"] == n, r["out"]
    rows = r["rows"]
    assert rows.shape == (n, 3)
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(n, dtype=float))
    assert r["relaunches"] == 1
    manager_rows = r["manager_rows"]  # one ledger row per manager instance, ever
    assert len(manager_rows) == 2 and manager_rows[0][1] == r["manager"], manager_rows
    assert [m for m in r["managers"] if m != r["manager"]] == [manager_rows[1][1]]
    assert r["progress"]["done_points"] == n and r["progress"]["dead"] == 0
    for wid in r["old_workers"]:  # bound to the lost queue: the new manager stops them at once
        assert f"stopping worker {wid} of the lost queue" in r["new_manager_console"], r["new_manager_console"][-3000:]
        assert r["old_worker_states"][wid] == "terminated", wid
    assert set(r["manager_states"].values()) == {"terminated"}  # teardown after the run


def test_manager_relaunch_leaves_the_ledger_consistent(manager_loss) -> None:
    """After the run completes, the ledger (and `mcc run`'s summary) has every subproblem done."""
    r, n = manager_loss, manager_loss["n"]
    assert r["out"]["state"] == "completed"
    assert r["out"]["subproblems"]["done"] == n // 4, (r["out"]["subproblems"], r["stuck"], r["stuck_events"])
    assert r["ledger_states"] == {"done": n // 4}, r["ledger_states"]


# -- 3. capacity, quota and throttling on the manager's calls --------------------------------------------------------
def test_capacity_quota_and_throttling_on_worker_launches(cloud, start_run) -> None:
    """The manager's worker launches meet InsufficientInstanceCapacity then InstanceLimitExceeded, and its
    DescribeInstances is throttled 3 times: it backs off, keeps running with the worker it has, completes."""
    proxy = cloud.proxy
    caller = threading.local()  # the access key of the request being handled (a hook runs in its thread)

    def remember_caller(call, phase: str) -> bool:
        if phase == "before":
            caller.key = call.access_key
        return False  # never drop

    def from_instance(action: str) -> Callable[[str, str], bool]:
        # the laptop signs with "testing"; instances with their IMDS role credentials ("ASIA…")
        return lambda s, a: s == "ec2" and a == action and (getattr(caller, "key", None) or "").startswith("ASIA")

    proxy.add_hook(remember_caller)
    n = 280
    t0 = time.monotonic()
    view = start_run(n)
    view.wait(lambda: len(view.workers()) == 2, 120, "the first two workers")
    view.wait(lambda: view.done_points() >= 16, 60, "the first points to be done")
    # the faults hit the manager's next launches (the replacement of a worker lost to a spot interruption)
    capacity = proxy.fail(from_instance("RunInstances"), "InsufficientInstanceCapacity", times=1)
    quota = proxy.fail(from_instance("RunInstances"), "InstanceLimitExceeded", times=1)
    throttle = proxy.throttle(from_instance("DescribeInstances"), times=3)
    victim = view.wait(lambda: view.booted_worker_holding_a_lease(set()), 30, "a worker holding a lease")
    cloud.runner.interrupt(victim)

    samples: list[tuple[int, int]] = []  # (workers, done points) from progress.json while the run goes on

    def sample_until_past_both_faults() -> bool:
        prog = view.progress()
        if prog.get("phase") == "running":
            samples.append((prog.get("workers"), prog["progress"]["done_points"]))
        return view.run.proc.poll() is not None or (capacity.hits and quota.hits and view.done_points() >= n)

    view.wait(lambda: view.state_of(victim) == "terminated", 30, "the interrupted worker to be terminated")
    wait_for(sample_until_past_both_faults, 120, "the run to get past both capacity errors")

    out = view.run.result(timeout=180)
    elapsed = time.monotonic() - t0
    assert out["state"] == "completed" and out["done"] == n, out
    assert_exactly_once(out["result"], n)

    (manager,) = [m["InstanceId"] for m in view.managers()]
    console = cloud.runner.console(manager)
    backoffs = [line for line in console.splitlines() if "cannot launch" in line]
    one = [d for w, d in samples if w == 1]
    final = view.s3_json("final.json")
    p = final["progress"]
    manager_key = cloud.runner.imds(manager).access_key
    laptop_launches = sum(1 for r in proxy.requests if r.action == "RunInstances" and r.access_key == "testing")
    manager_launches = sum(1 for r in proxy.requests if r.action == "RunInstances" and r.access_key == manager_key)
    print(f"\n[capacity] run {view.run_id}: fault hits capacity={capacity.hits} quota={quota.hits} "
          f"throttle={throttle.hits}; RunInstances laptop={laptop_launches} manager={manager_launches}; "
          f"done while 1 worker: {min(one, default=None)}→{max(one, default=None)}; "
          f"preemptions={p['preemptions']} failures={p['failures']} relaunches={relaunches(view.home, view.run_id)} "
          f"elapsed={elapsed:.1f}s timings={out['timings']}\n" + "\n".join(backoffs))
    assert capacity.hits == 1 and quota.hits == 1, (capacity, quota)
    assert throttle.hits == 3, throttle
    assert laptop_launches == 1  # the manager only: the faults never touched the laptop
    assert manager_launches >= 3  # the first launch, then one refused for capacity and one for quota
    assert any("InsufficientInstanceCapacity" in line and "retrying in" in line for line in backoffs), console[-3000:]
    assert any("InstanceLimitExceeded" in line and "retrying in" in line for line in backoffs), console[-3000:]
    assert one and max(one) > min(one), samples  # progress went on with the one worker left
    assert p["done_points"] == n and p["dead"] == 0


# -- 4. clean against planted resources -----------------------------------------------------------------------------
def test_clean_removes_planted_resources_of_this_ledger_only(cloud, mcc_home: Path) -> None:
    """Resources tagged with this ledger but unknown to it are swept away; another ledger's and untagged
    resources are left alone."""
    t0 = time.monotonic()
    shared = mcc_json("provision", "--backend", "aws", "--region", "us-east-1", home=mcc_home, timeout=120)
    mine = ledger_uuid(mcc_home)
    other = str(uuid.uuid4())
    ec2, ssm, s3 = cloud.client("ec2"), cloud.client("ssm"), cloud.client("s3")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]

    def group(name: str, ledger: str) -> str:
        return ec2.create_security_group(
            GroupName=name, Description="planted by the test", VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                {"Key": "mcc:ledger", "Value": ledger}, {"Key": "Name", "Value": name}]}])["GroupId"]

    planted_group = group("planted-mine", mine)
    planted_param = f"/mcc/{mine}/planted-secret"
    ssm.put_parameter(Name=planted_param, Value="planted", Type="SecureString",
                      Tags=[{"Key": "mcc:ledger", "Value": mine}])
    foreign_group = group("planted-other-ledger", other)
    untagged_bucket = f"planted-untagged-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=untagged_bucket)

    result = mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)
    elapsed = time.monotonic() - t0
    adopted = {(a["kind"], a["physical_id"]) for a in result["adopted"]}
    print(f"\n[clean] ledger {mine}: provisioned {[r['kind'] for r in shared]}; deleted "
          f"{[(d['kind'], d['physical_id']) for d in result['deleted']]}; adopted {sorted(adopted)}; "
          f"survivors {result['survivors']}; elapsed={elapsed:.1f}s")
    assert result["survivors"] == []
    assert ("security_group", planted_group) in adopted and ("parameter", planted_param) in adopted, adopted

    # (a) this ledger's planted resources are gone
    with pytest.raises(ClientError) as gone:
        ec2.describe_security_groups(GroupIds=[planted_group])
    assert gone.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
    with pytest.raises(ClientError) as gone:
        ssm.get_parameter(Name=planted_param)
    assert gone.value.response["Error"]["Code"] == "ParameterNotFound"
    for row in shared:  # and what the ledger itself created
        if row["kind"] == "security_group":
            with pytest.raises(ClientError):
                ec2.describe_security_groups(GroupIds=[row["physical_id"]])
        if row["kind"] == "bucket":
            with pytest.raises(ClientError):
                s3.head_bucket(Bucket=row["physical_id"])

    # (b) another ledger's group and an untagged bucket are untouched
    kept = ec2.describe_security_groups(GroupIds=[foreign_group])["SecurityGroups"][0]
    assert {t["Key"]: t["Value"] for t in kept["Tags"]}["mcc:ledger"] == other
    s3.head_bucket(Bucket=untagged_bucket)
    assert not {p for _, p in adopted} & {foreign_group, untagged_bucket}


def _set_ledger_created_at(home: Path, when: float) -> None:
    """Stamp the ledger as made at ``when``: emulated resources are made at real time, seconds apart, and a
    test must not wait out the clock skew the sweep allows."""
    with sqlite3.connect(home / "ledger.db") as con:
        assert con.execute("UPDATE meta SET value=? WHERE key='created_at'", (repr(when),)).rowcount == 1


def test_clean_refuses_what_was_made_before_the_ledger(cloud, mcc_home: Path, tmp_path: Path) -> None:
    """A key pair, role and parameter made before the ledger, then given its tag (CreateTags, TagRole,
    AddTagsToResource on foreign resources), are refused by clean: kept, reported apart, exit non-zero naming
    them. A key pair made after the ledger is deleted. `--ledger-id` (the lost ledger's uuid, from a newer
    ledger) applies no such bound and removes all of them."""
    from mcc.driver.engine import CLOCK_SKEW_S
    from tests.conftest import mcc

    ec2, iam, ssm = cloud.client("ec2"), cloud.client("iam"), cloud.client("ssm")
    suffix = uuid.uuid4().hex[:8]
    old_key, new_key, old_role = f"planted-old-{suffix}", f"planted-new-{suffix}", f"mcc-planted-{suffix}"
    old_param = f"/mcc/planted-{suffix}"
    ec2.create_key_pair(KeyName=old_key)
    iam.create_role(RoleName=old_role, Path="/mcc/", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    iam.put_role_policy(RoleName=old_role, PolicyName="foreign", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]}))
    ssm.put_parameter(Name=old_param, Value="foreign", Type="String")
    old_pair = ec2.describe_key_pairs(KeyNames=[old_key])["KeyPairs"][0]
    made = [old_pair["CreateTime"].timestamp(), iam.get_role(RoleName=old_role)["Role"]["CreateDate"].timestamp(),
            ssm.get_parameter(Name=old_param)["Parameter"]["LastModifiedDate"].timestamp()]
    wait_for(lambda: time.time() > max(made) + 1.5, timeout=10)  # the new key pair is made in a later second

    mcc_json("ledger", "show", home=mcc_home)  # the ledger is made
    mine = ledger_uuid(mcc_home)
    tag = {"Key": "mcc:ledger", "Value": mine}
    ec2.create_tags(Resources=[old_pair["KeyPairId"]], Tags=[tag])
    iam.tag_role(RoleName=old_role, Tags=[tag])
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=old_param, Tags=[tag])
    ec2.create_key_pair(KeyName=new_key, TagSpecifications=[{"ResourceType": "key-pair", "Tags": [tag]}])
    new_made = ec2.describe_key_pairs(KeyNames=[new_key])["KeyPairs"][0]["CreateTime"].timestamp()
    assert new_made > max(made)
    # as if the ledger had been made CLOCK_SKEW_S after midway: the old ones predate it beyond the skew
    _set_ledger_created_at(mcc_home, (max(made) + new_made) / 2 + CLOCK_SKEW_S)

    dry = mcc_json("clean", "--all", "--dry-run", "--regions", "us-east-1", home=mcc_home, timeout=120)
    assert ("key_pair", new_key) in {(a["kind"], a["physical_id"]) for a in dry["adopted"]}
    assert {("key_pair", old_key), ("role", old_role), ("role_policy", f"{old_role}/foreign"),
            ("parameter", old_param)} == {(r["kind"], r["physical_id"]) for r in dry["refused"]}

    proc = mcc("clean", "--all", "--yes", "--json", "--regions", "us-east-1", home=mcc_home, timeout=300)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    report = json.loads(proc.stdout)
    refused = {(r["kind"], r["physical_id"]) for r in report["refused"]}
    print(f"\n[clean] refused {sorted(refused)}; adopted {[(a['kind'], a['physical_id']) for a in report['adopted']]}"
          f"\n{proc.stderr.strip()}")
    assert refused == {("key_pair", old_key), ("role", old_role), ("role_policy", f"{old_role}/foreign"),
                       ("parameter", old_param)}
    assert report["survivors"] == [] and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "refused 4 resource(s) older than this ledger (made " in message, message
    assert "tagged with it after they were created elsewhere. Not deleted; remove their mcc:ledger tag" in message
    assert {r["error"] for r in report["refused"]} == {"refused: tagged with this ledger after it was created "
                                                      "elsewhere (it is older than the ledger) - not deleted; remove "
                                                      "its mcc:ledger tag or delete it yourself"}
    assert all(name in message for name in (old_key, old_role, old_param)), message
    assert ("key_pair", new_key) in {(a["kind"], a["physical_id"]) for a in report["adopted"]}
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [new_key]}])["KeyPairs"] == []
    # the refused are untouched: the key, the role with its inline policy, the parameter
    assert ec2.describe_key_pairs(KeyNames=[old_key])["KeyPairs"][0]["KeyPairId"] == old_pair["KeyPairId"]
    assert iam.list_role_policies(RoleName=old_role)["PolicyNames"] == ["foreign"]
    assert ssm.get_parameter(Name=old_param)["Parameter"]["Value"] == "foreign"
    assert mcc("clean", "--all", "--yes", "--regions", "us-east-1", home=mcc_home, timeout=300).returncode == 3  # still refused, still named

    # `--ledger-id` from a ledger made long after: no bound, everything tagged with the lost uuid goes
    fresh = tmp_path / "another-laptop"
    mcc_json("ledger", "show", home=fresh)
    _set_ledger_created_at(fresh, time.time() + 86400)
    result = mcc_json("clean", "--all", "--yes", "--ledger-id", mine, home=fresh, timeout=300)
    assert result["survivors"] == [] and result["refused"] == []
    assert {("key_pair", old_key), ("role", old_role), ("parameter", old_param)} <= {
        (a["kind"], a["physical_id"]) for a in result["adopted"]}
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [old_key]}])["KeyPairs"] == []
