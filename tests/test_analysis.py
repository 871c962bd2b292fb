"""mcc.report.analysis on a ledger with known launch/terminate times (exact instance-seconds and cost), the
journal's real event times in Event.at, and one real local run through `mcc analyze`, `--plot` and `mcc logs`."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from mcc.report import analysis
from mcc.driver.journal import apply_events
from mcc.ledger import Event, Resource, Run, create_row, create_subproblems, fire, models, open_ledger
from tests.conftest import mcc, mcc_json

M5, C5X, T3MICRO, CACHE = 0.096, 0.17, 0.0104, 0.017


def _ev(n: int, typ: str, sub: int, worker: str, t: float, **more: Any) -> dict[str, Any]:
    return {"id": f"{n}-0", "type": typ, "sub": str(sub), "worker": worker, "t": f"{t:.6f}", **more}


# claimed/acked/failed/preempted as the manager journals them; t = the queue server's time
JOURNAL = [
    _ev(1, "claimed", 0, "w-0001", 1100.0, attempt="1"),
    _ev(2, "claimed", 1, "w-0001", 1100.0, attempt="1"),  # a batch claim: computed after sub 0
    _ev(3, "claimed", 2, "w-0002", 1105.0, attempt="1"),
    _ev(4, "failed", 2, "w-0002", 1107.0, outcome="retry", attempt="1", reason="boom"),
    _ev(5, "claimed", 2, "w-0002", 1108.0, attempt="2"),
    _ev(6, "acked", 0, "w-0001", 1110.0),
    _ev(7, "acked", 2, "w-0002", 1115.0),
    _ev(8, "claimed", 3, "w-0002", 1116.0, attempt="1"),
    _ev(9, "preempted", 3, "w-0002", 1117.0),
    _ev(10, "acked", 1, "w-0001", 1120.0),
    _ev(11, "claimed", 3, "w-0001", 1121.0, attempt="1"),
    _ev(12, "acked", 3, "w-0001", 1130.0),
    _ev(13, "claimed", 4, "w-0001", 1131.0, attempt="3"),
    _ev(14, "failed", 4, "w-0001", 1132.0, outcome="dead", attempt="3", reason="boom"),
]


def _instance(run: Run, name: str, backend: str = "aws", **fields: Any) -> Resource:
    return create_row(Resource, run=run.id, kind="instance", name=name, backend=backend, region=fields.pop("region", None),
                      idempotency_key=f"{run.id}/{name}", state="adopted", **fields)


def _finish(run: Run, start_at: float, end_at: float) -> Run:
    for trigger in ("provision", "launch", "start", "combine", "collect", "complete"):
        run = fire(run, trigger)
    Event.update(at=start_at).where((Event.run_id == run.id) & (Event.entity == "run") & (Event.trigger == "start")).execute()
    Event.update(at=end_at).where((Event.run_id == run.id) & (Event.entity == "run") & (Event.trigger == "complete")).execute()
    return run


def build_aws_run(run_id: str = "r-aws") -> Run:
    """An AWS-shaped run: a t3.micro manager, two m5.large workers (one spot), a stalled c5.xlarge, a cache."""
    run = create_row(Run, id=run_id, backend="aws", project_dir="/nowhere", settings={"workers": 3, "region": "us-east-1"},
                     points=100)
    create_subproblems(run, [(i * 10, 10) for i in range(10)])
    _instance(run, "manager", region="us-east-1", spec={"role": "manager"},
              attrs={"instance_type": "t3.micro", "launched_at": 1000.0, "terminated_at": 1030.0})
    _instance(run, "w-0001", region="us-east-1",
              attrs={"instance_type": "m5.large", "launched_at": 1010.0, "terminated_at": 1010.0 + 3600.4})
    _instance(run, "w-0002", region="us-east-1",
              attrs={"instance_type": "m5.large", "spot": True, "price_per_hour": 0.035, "launched_at": 1010.0,
                     "terminated_at": 2810.0})
    stalled = _instance(run, "w-0003", region="us-east-1", attrs={"instance_type": "c5.xlarge"}, active_at=1050.0)
    stalled = fire(stalled, "begin_delete", reason="stalled")
    fire(stalled, "deleted", deleted_at=1150.0)
    create_row(Resource, run=run.id, kind="cache", name="queue", backend="aws", region="us-east-1",
               idempotency_key=f"{run.id}/queue", state="adopted",
               attrs={"node_type": "cache.t3.micro", "launched_at": 1000.0, "terminated_at": 4700.0})
    apply_events(run, JOURNAL)
    models.Run.update(done=30).where(models.Run.id == run.id).execute()
    return _finish(models.Run.get_by_id(run.id), 1005.0, 2005.0)


def build_local_run(run_id: str = "r-local") -> Run:
    run = create_row(Run, id=run_id, backend="local", project_dir="/nowhere", settings={"workers": 1}, points=10)
    create_subproblems(run, [(0, 10)])
    _instance(run, "manager", backend="local", active_at=500.0, deleted_at=520.0)
    _instance(run, "w-0001", backend="local", attrs={"launched_at": 502.0}, active_at=503.0, deleted_at=517.5)
    apply_events(run, [_ev(1, "claimed", 0, "w-0001", 505.0, attempt="1"), _ev(2, "acked", 0, "w-0001", 515.0)])
    models.Run.update(done=10).where(models.Run.id == run.id).execute()
    return _finish(models.Run.get_by_id(run.id), 501.0, 519.0)


@pytest.fixture
def ledger(mcc_home: Path):
    with open_ledger(mcc_home) as opened:
        yield opened


def test_journal_times_and_workers_reach_the_events(ledger) -> None:
    run = build_aws_run()
    subs = {s.index: s.id for s in models.Subproblem.select().where(models.Subproblem.run == run.id)}
    leases = list(Event.select().where((Event.entity == "subproblem") & (Event.trigger == "lease")
                                       & (Event.entity_id == str(subs[0]))))
    assert [(e.at, e.actor) for e in leases] == [(1100.0, "w-0001")]
    fails = list(Event.select().where((Event.entity == "subproblem") & (Event.trigger == "fail")).order_by(Event.id))
    assert [(e.entity_id, e.at, e.actor) for e in fails] == [(str(subs[2]), 1107.0, "w-0002"), (str(subs[4]), 1132.0, "w-0001")]


def test_analyze_run_exact_numbers(ledger) -> None:
    build_aws_run()
    a = analysis.analyze_run("r-aws", now=10_000.0)
    assert a["instance_types"] == {"c5.xlarge": 1, "m5.large": 2, "t3.micro": 1}
    assert a["instance_type"] == "c5.xlarge+m5.large"
    assert (a["workers"], a["worker_instances"], a["instances"]) == (3, 3, 4)
    assert a["wall_s"] == pytest.approx(1000.0)
    assert a["instance_seconds"] == pytest.approx(30 + 3600.4 + 1800 + 100)
    assert a["billed_instance_seconds"] == 60 + 3601 + 1800 + 100
    runs = {i["name"]: i for i in a["instance_runs"]}
    assert runs["manager"]["cost_usd"] == pytest.approx(60 * T3MICRO / 3600)  # 30 s → the 60 s minimum
    assert runs["w-0001"]["cost_usd"] == pytest.approx(3601 * M5 / 3600)  # per second, rounded up
    assert runs["w-0002"]["cost_usd"] == pytest.approx(1800 * 0.035 / 3600)  # the recorded spot price wins
    assert runs["w-0003"]["cost_usd"] == pytest.approx(100 * C5X / 3600)  # active_at/deleted_at when no attrs
    ec2 = 60 * T3MICRO / 3600 + 3601 * M5 / 3600 + 1800 * 0.035 / 3600 + 100 * C5X / 3600
    cache = 2 * CACHE  # 3700 s = two node-hours
    assert a["cost_breakdown"]["elasticache"] == pytest.approx(cache)
    assert a["cost_usd"] == pytest.approx(ec2 + cache)
    assert a["cost_per_point"] == pytest.approx((ec2 + cache) / 30)
    assert a["points_per_s"] == pytest.approx(30 / 1000)
    assert a["vcpus"] == 8  # w-0001 + w-0002 (2 each) + w-0003 (4) at 1050-1150; the manager ended at 1030
    assert (a["retries"], a["preemptions"], a["stalls"]) == (2, 1, 1)
    assert (a["dead_points"], a["dead_subproblems"]) == (10, 1)
    assert a["cost_complete"] and a["finished"]


def test_local_run_costs_nothing_but_counts_seconds(ledger) -> None:
    build_local_run()
    a = analysis.analyze_run("r-local")
    assert a["instance_type"] == "local" and a["cost_usd"] == 0 and a["cost_per_point"] == 0
    assert a["instance_seconds"] == pytest.approx(20.0 + 15.5)  # attrs.launched_at wins over active_at
    assert a["billed_instance_seconds"] == 0
    assert a["points_per_s"] == pytest.approx(10 / 18.0)
    assert a["vcpus"] == 2


def test_unknown_price_and_running_instance(ledger) -> None:
    run = create_row(Run, id="r-odd", backend="aws", project_dir="/nowhere", settings={"region": "us-east-1"})
    _instance(run, "w-0001", region="us-east-1", attrs={"instance_type": "x9.weird", "launched_at": 100.0})
    _instance(run, "w-0002", region="us-east-1", attrs={"instance_type": "m5.large", "launched_at": 100.0})
    a = analysis.analyze_run("r-odd", now=190.0)
    assert not a["cost_complete"] and a["unpriced_instance_types"] == ["x9.weird"]
    assert a["instance_seconds"] == pytest.approx(180.0)  # still running: counted up to now
    assert a["cost_usd"] == pytest.approx(90 * M5 / 3600)
    assert a["wall_s"] == 0 and a["points_per_s"] is None


def test_by_type_and_tsv(ledger) -> None:
    build_aws_run()
    build_local_run()
    rows = {r["instance_type"]: r for r in analysis.analyze_by_type()}
    assert set(rows) == {"c5.xlarge+m5.large", "local"}
    assert rows["local"]["runs"] == 1 and rows["local"]["cost_usd"] == 0
    assert rows["c5.xlarge+m5.large"]["points"] == 30
    tsv = analysis.to_tsv([analysis.summary_row(analysis.analyze_run(r)) for r in ("r-aws", "r-local")],
                          analysis.SUMMARY_COLUMNS)
    lines = tsv.splitlines()
    assert lines[0].split("\t") == analysis.SUMMARY_COLUMNS and len(lines) == 3
    assert all(len(line.split("\t")) == len(analysis.SUMMARY_COLUMNS) for line in lines)


def test_worker_timeline_bars(ledger) -> None:
    build_aws_run()
    tl = analysis.worker_timeline("r-aws")
    assert tl["workers"] == ["w-0001", "w-0002", "w-0003"]
    bars = {(b["worker"], b["sub"], b["outcome"]): b for b in tl["bars"]}
    assert sorted(bars) == sorted([
        ("w-0001", 0, "done"), ("w-0001", 1, "done"), ("w-0002", 2, "failed"), ("w-0002", 2, "done"),
        ("w-0002", 3, "preempted"), ("w-0001", 3, "done"), ("w-0001", 4, "failed")])
    batch = bars["w-0001", 1, "done"]
    assert (batch["leased_at"], batch["start"], batch["end"]) == (1100.0, 1110.0, 1120.0)  # after sub 0
    util = analysis.utilisation(tl, steps=50)
    assert max(util["busy"]) <= max(util["alive"]) == 3


# -- a real local run ---------------------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_local_run_analyze_plot_and_logs(mcc_home: Path, make_project, tmp_path: Path) -> None:
    project = make_project(40, toml="chunk_size = 4\nworkers = 2\n")
    out = mcc_json("run", str(project), home=mcc_home)
    run_id = out["run_id"]
    assert out["state"] == "completed"
    a = mcc_json("analyze", run_id, home=mcc_home)
    assert a["run_id"] == run_id and a["instance_type"] == "local" and a["done"] == 40
    assert a["points_per_s"] > 0 and a["instance_seconds"] > 0 and a["cost_usd"] == 0
    assert a["worker_instances"] >= 2 and a["wall_s"] > 0

    png = tmp_path / "x.png"
    proc = mcc("analyze", run_id, "--plot", str(png), home=mcc_home, check=True)
    assert run_id in proc.stdout
    assert png_size(png)[0] > 0
    from mcc.report import plots

    fig = plots.plot_run(run_id, tmp_path / "again.png", home=mcc_home)
    assert len(plots.timeline_rows(fig)) == a["worker_instances"]

    logs = mcc("logs", run_id, home=mcc_home, check=True).stdout.splitlines()
    assert any(line.startswith("manager-1 ") and "finished: completed" in line for line in logs)
    # a worker that started after the others had finished (a loaded machine) may have logged nothing
    workers = sorted({line.split()[0] for line in logs if line.startswith("w-")})
    assert workers and set(workers) <= {"w-0001", "w-0002", "w-0003", "w-0004"}
    folder = project / "results" / run_id / "logs"
    assert (folder / "manager-1.log").exists() and not (folder / "merged.log").exists()  # merged when asked
    one = mcc("logs", run_id, "--worker", workers[0], home=mcc_home, check=True).stdout.splitlines()
    assert one and all(line.startswith(f"{workers[0]} ") for line in one)
    summary = mcc("analyze", home=mcc_home, check=True).stdout
    assert run_id in summary and "local" in summary


def test_types_from_settings_and_spot_without_a_price(ledger) -> None:
    run = create_row(Run, id="r-cfg", backend="aws", project_dir="/nowhere",
                     settings={"aws": {"region": "eu-west-1", "worker_type": "c6i.xlarge", "manager_type": "t3.small",
                                       "spot": True}})
    _instance(run, "manager", attrs={"launched_at": 0.0, "terminated_at": 120.0})
    _instance(run, "w-0001", attrs={"launched_at": 0.0, "terminated_at": 100.0})
    a = analysis.analyze_run("r-cfg", now=200.0)
    runs = {i["name"]: i for i in a["instance_runs"]}
    assert (runs["manager"]["instance_type"], runs["manager"]["spot"]) == ("t3.small", False)
    assert (runs["w-0001"]["instance_type"], runs["w-0001"]["spot"]) == ("c6i.xlarge", True)
    assert a["region"] == "eu-west-1"
    assert runs["w-0001"]["cost_usd"] == pytest.approx(100 * 0.192 / 3600)
    assert any("on-demand rate" in note for note in a["notes"])


def test_ebs_s3_and_recorded_costs(ledger) -> None:
    run = create_row(Run, id="r-store", backend="aws", project_dir="/nowhere", settings={"region": "us-east-1"})
    month = 730 * 3600.0
    for kind, attrs in (("snapshot", {"ebs_gb": 8, "launched_at": 0.0, "terminated_at": month}),
                        ("bucket", {"stored_gb": 100, "launched_at": 0.0, "terminated_at": month / 2}),
                        ("nat", {"cost_usd": 1.25})):
        create_row(Resource, run=run.id, kind=kind, name=kind, backend="aws", region="us-east-1",
                   idempotency_key=f"{run.id}/{kind}", state="adopted", attrs=attrs)
    a = analysis.analyze_run("r-store", now=month)
    assert a["cost_breakdown"] == pytest.approx({"ebs": 8 * 0.08, "s3": 100 * 0.023 / 2, "nat": 1.25})
    assert a["instances"] == 0 and a["instance_seconds"] == 0


def test_interface_endpoints_cost_whole_hours_per_zone_gateways_nothing(ledger) -> None:
    """`public_ip = false`: an interface endpoint in two zones for 1.5 h is 2 zones x 2 hours at $0.01; the S3
    gateway endpoint of the same run is free."""
    run = create_row(Run, id="r-private", backend="aws", project_dir="/nowhere", settings={"region": "us-east-1"})
    for service, spec in (("ssm", {"endpoint_type": "Interface", "subnet_ids": ["subnet-a", "subnet-b"]}),
                          ("s3", {"endpoint_type": "Gateway", "route_table_ids": ["rtb-a"]})):
        create_row(Resource, run=run.id, kind="vpc_endpoint", name=service, backend="aws", region="us-east-1",
                   idempotency_key=f"{run.id}/endpoint/{service}", state="adopted", spec=spec,
                   attrs={"launched_at": 0.0, "terminated_at": 5400.0})
    a = analysis.analyze_run("r-private", now=6000.0)
    assert a["cost_breakdown"] == pytest.approx({"vpc endpoints": 2 * 2 * 0.01})


# -- the live cost: projection, figures from the ledger, the meter --------------------------------------

def test_projected_cost_is_so_far_plus_remaining_time_at_the_burn_rate() -> None:
    # 600 points left at 2 points/s = 300 s more at $3.60/h = $0.30 more
    assert analysis.projected_cost(1.0, 3.6, 600, 2.0) == pytest.approx(1.30)
    assert analysis.projected_cost(1.0, 3.6, 0, 2.0) == 1.0  # nothing left: what it cost
    assert analysis.projected_cost(1.0, 0.0, 600, 2.0) == 1.0  # nothing burning (all instances gone)
    assert analysis.projected_cost(1.0, 3.6, 600, None) is None  # no rate yet: unknown, not a guess
    assert analysis.projected_cost(1.0, 3.6, 600, 0.0) is None
    # twice the rate halves what remains to be paid
    # an instance 10 s old has paid for 60 s (the minimum): 300 s more of it costs 250 s more, not 300 s
    assert analysis.projected_cost(1.0, 3.6, 600, 2.0, [(3.6, 50.0)]) == pytest.approx(1.0 + 0.25)
    # and when the run ends within what it already paid for, nothing more
    assert analysis.projected_cost(1.0, 3.6, 60, 2.0, [(3.6, 50.0)]) == pytest.approx(1.0)
    more = analysis.projected_cost(0.0, 3.6, 600, 2.0)
    assert analysis.projected_cost(0.0, 3.6, 600, 4.0) == pytest.approx(more / 2)


def build_live_aws_run(run_id: str = "r-live") -> Run:
    """A running AWS run: a t3.micro manager and an m5.large worker still up, a c5.xlarge gone, a cache up."""
    run = create_row(Run, id=run_id, backend="aws", project_dir="/nowhere", settings={"region": "us-east-1"},
                     points=1000)
    for trigger in ("provision", "launch", "start"):
        run = fire(run, trigger)
    Event.update(at=1005.0).where((Event.run_id == run.id) & (Event.trigger == "start")).execute()
    _instance(run, "manager", region="us-east-1", spec={"role": "manager"},
              attrs={"instance_type": "t3.micro", "launched_at": 1000.0})
    _instance(run, "w-0001", region="us-east-1", attrs={"instance_type": "m5.large", "launched_at": 1010.0})
    _instance(run, "w-0002", region="us-east-1",
              attrs={"instance_type": "c5.xlarge", "launched_at": 1010.0, "terminated_at": 1110.0})
    create_row(Resource, run=run.id, kind="cache", name="queue", backend="aws", region="us-east-1",
               idempotency_key=f"{run.id}/queue", state="adopted",
               attrs={"node_type": "cache.t3.micro", "launched_at": 1000.0})
    models.Run.update(done=290, dead=10).where(models.Run.id == run.id).execute()
    return models.Run.get_by_id(run.id)


def test_cost_figures_of_a_running_aws_run(ledger) -> None:
    run = build_live_aws_run()
    c = analysis.cost_figures(run, now=1105.0)
    so_far = 105 * T3MICRO / 3600 + 95 * M5 / 3600 + 100 * C5X / 3600 + CACHE  # cache: one node-hour begun
    burn = T3MICRO + M5 + CACHE  # what is still up
    assert c["so_far_usd"] == pytest.approx(so_far)
    assert c["burn_usd_per_hour"] == pytest.approx(burn)
    assert c["points_per_s"] == pytest.approx(300 / 100)  # (done + dead) since the start event
    assert c["remaining_points"] == 700
    assert c["projected_usd"] == pytest.approx(so_far + 700 / 3.0 * burn / 3600)
    assert not c["local"] and c["complete"] and not c["finished"]
    # the live view's measured rate wins over the average since the start
    faster = analysis.cost_figures(run, now=1105.0, points_per_s=7.0)
    assert faster["projected_usd"] == pytest.approx(so_far + 100.0 * burn / 3600)


def test_cost_figures_of_finished_and_local_runs(ledger) -> None:
    build_aws_run()
    c = analysis.cost_figures(models.Run.get_by_id("r-aws"))
    assert c["finished"] and c["burn_usd_per_hour"] == 0 and c["remaining_points"] == 0
    assert c["projected_usd"] == c["so_far_usd"] == pytest.approx(analysis.analyze_run("r-aws")["cost_usd"])
    build_local_run()
    local = analysis.cost_figures(models.Run.get_by_id("r-local"))
    assert local["local"] and local["so_far_usd"] == local["projected_usd"] == 0.0


def test_cost_meter_measures_the_rate_and_reads_the_ledger_sparingly(ledger) -> None:
    run = build_live_aws_run()
    now = [0.0]
    meter = analysis.CostMeter(every=2.0, clock=lambda: now[0])

    def progress(done: int) -> dict[str, Any]:
        return {"progress": {"done_points": done, "dead_points": 10}}

    first = meter.update(run, progress(290))
    assert first["remaining_points"] == 700 and first["burn_usd_per_hour"] == pytest.approx(T3MICRO + M5 + CACHE)
    now[0] = 1.0
    between = meter.update(run, progress(300))  # within 2 s: no ledger read, the projection from the new counts
    assert between["so_far_usd"] == first["so_far_usd"] and between["remaining_points"] == 690
    assert between["points_per_s"] == pytest.approx(10.0)  # 10 points in the 1 s since the first observation
    assert between["projected_usd"] == pytest.approx(
        analysis.projected_cost(first["so_far_usd"], first["burn_usd_per_hour"], 690, 10.0))
    worker = Resource.get((Resource.run == run.id) & (Resource.name == "w-0001"))
    Resource.update(attrs={**worker.attrs, "terminated_at": 1100.0}).where(Resource.id == worker.id).execute()
    assert meter.update(run, progress(300))["burn_usd_per_hour"] == first["burn_usd_per_hour"]  # not read yet
    now[0] = 2.5
    second = meter.update(run, progress(340))
    assert second["burn_usd_per_hour"] == pytest.approx(T3MICRO + CACHE)  # read again: the worker has ended
    assert second["points_per_s"] == pytest.approx(50 / 2.5)  # measured between the two observations
    assert second["remaining_points"] == 1000 - 340 - 10
