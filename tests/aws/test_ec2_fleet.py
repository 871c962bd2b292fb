"""The EC2 fleet's per-tick query (remote/ec2_fleet.py) against moto over HTTP and a real redis-server.

A tick asks EC2 only for the run's workers that are not running: the reply must leave the running ones
out (its parse is what a 1,000-worker tick costs), and still tell a stopped or terminated worker dead.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from mcc.providers.aws import images
from mcc.providers.aws.clients import AwsContext
from mcc.remote.ec2_fleet import Ec2Fleet
from mcc.remote.runtime import Runtime
from mcc.work.queue import Queue
from mcc.work.runspec import RunSpec, instance_key
from mcc.work.stores import LocalStore, get_json, put_json
from tests.aws._moto import aws_ctx, aws_env, moto_endpoint  # noqa: F401 - fixtures
from tests.test_queue import client, server  # noqa: F401 - the real redis-server fixtures


def _fleet(ctx: AwsContext, client: Any, tmp_path: Path) -> Ec2Fleet:  # noqa: F811
    ec2 = ctx.client("ec2")
    run_id = f"fleet-{uuid.uuid4().hex[:8]}"
    template = ec2.create_launch_template(LaunchTemplateName=run_id, LaunchTemplateData={
        "ImageId": images.base_image_id(ctx), "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateId"]
    aws = {"region": ctx.region, "launch_template_id": template, "worker_type": "t3.micro", "spot": False,
           "subnet_id": None}
    spec = RunSpec(run_id=run_id, ledger_uuid=ctx.ledger_uuid, n_points=4, chunks=[(0, 4)], entry_kind="function",
                   entry_target="entry:compute", project_dir=str(tmp_path), workers=4, max_attempts=2,
                   point_timeout=10, lease_seconds=5, has_combiner=False, extra={"backend": "aws", "aws": aws})
    rt = Runtime(spec, LocalStore(tmp_path / "bucket"), client, Queue(client, run_id), tmp_path / "work")
    return Ec2Fleet(rt, ctx, aws, user_data="")


def test_a_tick_asks_only_for_workers_that_are_not_running(aws_ctx: AwsContext, client,  # noqa: F811
                                                            tmp_path: Path) -> None:
    fleet = _fleet(aws_ctx, client, tmp_path)
    ec2 = aws_ctx.client("ec2")
    ids = fleet.launch_workers(4)
    assert len(ids) == 4
    running, stopped, killed = ids[:2], ids[2], ids[3]
    ec2.stop_instances(InstanceIds=[stopped])  # behind the manager's back
    ec2.terminate_instances(InstanceIds=[killed])  # what a spot interruption does
    replied: list[str] = []

    def seen(parsed: dict[str, Any], **_: Any) -> None:
        replied.extend(i["InstanceId"] for r in parsed.get("Reservations", []) for i in r["Instances"])

    ec2.meta.events.register("after-call.ec2.DescribeInstances", seen)
    try:
        assert fleet.query_workers() == {running[0]: True, running[1]: True, stopped: False, killed: False}
    finally:
        ec2.meta.events.unregister("after-call.ec2.DescribeInstances", seen)
    assert set(replied) == {stopped, killed}, replied  # the running workers were not in the reply
    # the stopped worker is terminated rather than left stopped (in every later reply, and on the bill)
    state = ec2.describe_instances(InstanceIds=[stopped])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in {"shutting-down", "terminated"}
    fleet.terminate_all("test over")


def test_a_new_manager_forgets_a_recorded_worker_that_ec2_does_not_list(aws_ctx: AwsContext, client,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    """A tick takes a worker absent from its reply as running (the heartbeat checks catch one that is not);
    adoption asks the full question, so a record of an instance EC2 does not know is ended."""
    fleet = _fleet(aws_ctx, client, tmp_path)
    alive = fleet.launch_workers(1)
    ghost = "i-0123456789abcdef0"
    put_json(fleet.rt.store, instance_key(ghost), {"worker_id": ghost, "role": "worker", "kind": "instance"})
    successor = Ec2Fleet(fleet.rt, aws_ctx, fleet.aws, user_data="")
    assert successor.adopt_workers() == alive
    assert "terminated_at" in (get_json(fleet.rt.store, instance_key(ghost)) or {})
    successor.known[ghost] = "running"  # from here on, only the heartbeat checks would catch it
    assert successor.query_workers() == {alive[0]: True, ghost: True}
    successor.terminate_all("test over")


def test_a_zone_without_capacity_moves_the_batch_to_the_next_subnet(aws_ctx: AwsContext, client,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    """`subnets` (issue 11 §3): the first subnet's zone answers InsufficientInstanceCapacity, so the same
    batch goes to the same type in the next subnet, in one more call; the records say where each worker is;
    the refused option cools down while the next batch goes straight to the subnet that had capacity."""
    ec2 = aws_ctx.client("ec2")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:2]
    assert len(subnets) == 2
    fleet = _fleet(aws_ctx, client, tmp_path)
    fleet.subnets = list(subnets)  # as `subnets = [...]` in [aws] gives the fleet
    asked: list[str | None] = []

    def no_capacity_in_the_first(params: dict[str, Any], **_: Any) -> Any:
        # the harness's fault, at the client: EC2's answer when a zone has no capacity for the type
        subnet = params["body"].get("SubnetId")  # the request as serialized for EC2's query protocol
        asked.append(subnet)
        if subnet == subnets[0]:
            return (type("R", (), {"status_code": 500})(),
                    {"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no t3.micro capacity in this zone"},
                     "ResponseMetadata": {"HTTPStatusCode": 500}})
        return None

    ec2.meta.events.register("before-call.ec2.RunInstances", no_capacity_in_the_first)
    try:
        ids = fleet.launch_workers(2)
        again = fleet.launch_workers(1)
    finally:
        ec2.meta.events.unregister("before-call.ec2.RunInstances", no_capacity_in_the_first)
    assert asked == [subnets[0], subnets[1], subnets[1]], asked
    assert len(ids) == 2 and len(again) == 1
    for iid in ids + again:
        record = get_json(fleet.rt.store, instance_key(iid))
        assert record["subnet_id"] == subnets[1] and record["instance_type"] == "t3.micro", record
        placed = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert placed["SubnetId"] == subnets[1]
    fleet.terminate_all("test over")
