"""The original mCC README's setup, S3 and launch blocks, run verbatim as a script against the emulated cloud.

The script is README's migration block, checked to be the three blocks of ../shared/seed/ORIGINAL-README.md ("Example of EC2 instance setup",
"Example of S3 setup", "Example of running calculations") as written, with the one import line README names
put after ``import boto3``; the project holds the seed's points.py and combine_data.py (read from
../shared/seed at test time) and an entry script under script/. A trailing mcc.toml only speeds the
emulated fleet up (chunks, ticks); it names no resource.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from mcc.providers.local.processes import run_bounded

from tests.aws.conftest import aws_toml
from tests.aws.test_run_aws import tagged_counts
from tests.conftest import EXAMPLE, SEED, combined_rows, latest_run_id, mcc_json
from tests.e2e.test_readme import OLD_POINTS

ORIGINAL = SEED / "ORIGINAL-README.md"
IMPORT = "from mcc import get_aws_settings, launch_master_node"
SECTIONS = ("Example of EC2 instance setup", "Example of S3 setup", "Example of running calculations")
SMALL_POINTS = OLD_POINTS  # 30 points in the original's style

pytestmark = pytest.mark.skipif(not ORIGINAL.exists(), reason="shared/seed is not beside the repository")


def original_blocks() -> list[str]:
    text = ORIGINAL.read_text()
    return [re.search(rf"## {title}\n.*?```python\n(.*?)```", text, re.S).group(1) for title in SECTIONS]


def block_script() -> str:
    """The original's three blocks as one script, with README's import line after ``import boto3``."""
    text = "\n".join(original_blocks())
    assert "import boto3\n" in text
    return text.replace("import boto3\n", f"import boto3\n{IMPORT}\n", 1)


def readme_block() -> str:
    """README's migration block: must be the original's three blocks as written plus the import line."""
    from tests.e2e.test_readme import blocks

    [body] = [b for h, b in blocks("python") if h == "Migrating from the original materialsCloudCompute"]
    assert body.split() == block_script().split()  # the same words; blank lines between the blocks aside
    return body


def test_readme_block_is_the_original_plus_one_import() -> None:
    assert IMPORT in readme_block()


def make_original_project(root: Path, *, full: bool) -> Path:
    project = root / "original"
    (project / "script").mkdir(parents=True)
    if full:
        shutil.copy(SEED / "points.py", project / "points.py")
    else:
        (project / "points.py").write_text(SMALL_POINTS)
    shutil.copy(SEED / "combine_data.py", project / "combine_data.py")
    shutil.copy(EXAMPLE / "bands_script.py", project / "script" / "my_script.py")
    chunk = 200 if full else 5
    (project / "mcc.toml").write_text(aws_toml({"chunk_size": chunk, "workers": 2}))
    (project / "block.py").write_text(readme_block())
    return project


def run_block(project: Path, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    started = time.monotonic()
    env = {**os.environ, "MCC_HOME": str(home)}
    proc = run_bounded([sys.executable, "block.py"], cwd=project, env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    print(f"the block ran in {time.monotonic() - started:.1f} s")
    return proc


def resources(home: Path) -> list[dict]:
    return mcc_json("ledger", "show", home=home)["resources"]


def expected_points(full: bool) -> np.ndarray:
    namespace: dict = {}
    exec((SEED / "points.py").read_text() if full else SMALL_POINTS, namespace)  # noqa: S102 - our own fixture
    return np.asarray(namespace["get_points"](), dtype=float)


def check_block(cloud, mcc_home: Path, tmp_path: Path, *, full: bool) -> None:
    if not cloud.elasticache.available():
        pytest.skip("create_redis_server needs the ElastiCache stand-in (a TLS-capable redis-server 7)")
    project = make_original_project(tmp_path, full=full)
    run_block(project, mcc_home)
    run_id = latest_run_id(mcc_home)
    first = resources(mcc_home)
    setup_rows = [r for r in first if r["run"] is None]
    kinds = sorted({r["kind"] for r in setup_rows})
    assert {"setup_group", "security_group", "key_pair", "image", "snapshot", "launch_template", "cache",
            "parameter", "bucket"} <= set(kinds), kinds
    assert all(r["state"] in ("active", "deleted") for r in setup_rows), setup_rows
    key = next(r for r in setup_rows if r["kind"] == "key_pair")
    assert (Path(key["attrs"]["key_path"]).stat().st_mode & 0o777) == 0o600

    # every resource the block made is a ledger row: what is tagged in the cloud is what the ledger holds
    # (but the workers, which the manager instance launches with the same tags)
    live = {(r["kind"], r["physical_id"]) for r in first if r["state"] == "active" and r["backend"] == "aws"}
    tagged = tagged_counts(mcc_home)
    assert set(tagged) == {k for k, _ in live}, (tagged, sorted(live))
    for kind, n in tagged.items():
        assert n == len([1 for k, _ in live if k == kind]) or kind == "instance", (kind, tagged, sorted(live))

    # the user's ports and addresses are honoured (they were given explicitly)
    group = next(r for r in setup_rows if r["kind"] == "security_group")
    perms = cloud.client("ec2").describe_security_groups(GroupIds=[group["physical_id"]])["SecurityGroups"][0]
    opened = {(p["FromPort"], c["CidrIp"]) for p in perms["IpPermissions"] for c in p.get("IpRanges", [])}
    assert opened == {(80, "192.168.0.0/16"), (22, "192.168.0.0/16"), (6379, "192.168.0.0/16")}

    started = time.monotonic()
    # all 19,710 points through the seed's script entry: ~45 CPU-minutes on the 2 workers' processes
    out = mcc_json("resume", run_id, home=mcc_home, timeout=6600 if full else 1800)
    print(f"resume (the run) took {time.monotonic() - started:.1f} s")
    assert out["state"] == "completed", out
    points = expected_points(full)
    rows = combined_rows(out["result"])
    assert rows.shape == (len(points), 5)
    got = rows[:, :3][np.lexsort(rows[:, :3].T[::-1])]
    np.testing.assert_allclose(got, points[np.lexsort(points.T[::-1])])
    run = mcc_json("ledger", "show", "--run", run_id, home=mcc_home)["runs"][0]
    assert run["backend"] == "aws"

    # the same block again, same folder: no setup resource is created; only a second run starts (and
    # `mcc clean --all` below stops it)
    before = {(r["kind"], r["physical_id"]) for r in resources(mcc_home) if r["run"] is None}
    run_block(project, mcc_home)
    second = latest_run_id(mcc_home)
    assert second != run_id
    after = {(r["kind"], r["physical_id"]) for r in resources(mcc_home) if r["run"] is None}
    assert after == before
    # hyperthreading=True: the workers keep SMT (no CpuOptions); =False reaches the run's [aws] settings and a
    # type that cannot turn SMT off is refused before the run exists
    worker_launches = [r.params for r in cloud.proxy.requests if r.action == "RunInstances"
                       and (r.access_key or "").startswith("ASIA")]
    assert worker_launches and not [k for p in worker_launches for k in p if k.startswith("CpuOptions")]
    (project / "smt.py").write_text(setup_script() + (
        'launch_master_node(master_template_id=template_id, s3_bucket_name=s3_name, worker_instance_type="c5.metal",\n'
        '                   entry_point_script="my_script.py", hyperthreading=False, redis_endpoint=redis_endpoint)\n'))
    refused = run_bounded([sys.executable, "smt.py"], cwd=project, env={**os.environ, "MCC_HOME": str(mcc_home)},
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "'c5.metal' cannot run with `hyperthreading = false`" in refused.stderr, \
        refused.stderr[-3000:]
    assert latest_run_id(mcc_home) == second

    started = time.monotonic()
    result = mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=900)
    print(f"clean took {time.monotonic() - started:.1f} s")
    assert result["survivors"] == []
    assert tagged_counts(mcc_home) == {}
    assert not Path(key["attrs"]["key_path"]).exists()


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason=(
    "the block bakes an image, waits for an ElastiCache server and starts two runs: ~4 min on 2 cores; "
    "run with MCC_SLOW_TESTS=1"))
@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.skipif(
    not os.environ.get("MCC_SEED_FULL"), reason=(
        "19,710 points through a script entry (one process per point) take tens of CPU-minutes; "
        "run with MCC_SLOW_TESTS=1 MCC_SEED_FULL=1")))], ids=["30-points", "all-seed-points"])
def test_original_readme_block_on_the_ledger(cloud, mcc_home: Path, tmp_path: Path, full: bool) -> None:
    check_block(cloud, mcc_home, tmp_path, full=full)


# -- bad input: a clear mcc.MccError, never a botocore traceback ---------------------------------------

@pytest.fixture
def folder(cloud, mcc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from mcc.driver.setup import forget

    project = tmp_path / "bad"
    (project / "script").mkdir(parents=True)
    (project / "points.py").write_text(SMALL_POINTS)
    monkeypatch.chdir(project)
    forget()
    yield project
    forget()


def test_wrong_boto3_objects_are_named(folder: Path) -> None:
    import mcc

    with pytest.raises(mcc.MccError, match=r"`ec2` must be boto3.resource\('ec2'\), got a ec2 client"):
        mcc.templates.create_security_group(boto3.client("ec2"))
    with pytest.raises(mcc.MccError, match=r"`ec2` must be boto3.resource\('ec2'\), got a s3 resource"):
        mcc.templates.create_key_pair(boto3.resource("s3"))
    with pytest.raises(mcc.MccError, match=r"`rc` must be boto3.client\('elasticache'\)"):
        mcc.templates.create_redis_server(boto3.resource("ec2"), "sg-1")
    with pytest.raises(mcc.MccError, match=r"`s3` must be boto3.resource\('s3'\), got str"):
        mcc.storage.create_s3_bucket("my-bucket")
    with pytest.raises(mcc.MccError, match="not made by mcc"):
        mcc.templates.create_launch_template(boto3.resource("ec2"), "ami-12345678", "sg-12345678")
    with pytest.raises(mcc.MccError, match="`ports` must map port numbers"):
        mcc.templates.create_security_group(boto3.resource("ec2"), ips={"me": "10.0.0.0/8"}, ports={"ssh": "tcp"})


def test_missing_script_files_and_unknown_arguments(folder: Path) -> None:
    import mcc
    from mcc import launch_master_node

    s3_name = mcc.storage.create_s3_bucket(boto3.resource("s3"))
    with pytest.raises(mcc.MccError, match=r"script has no files.*Put your entry script there"):
        mcc.launch.upload_user_endpoint(s3_name)
    with pytest.raises(mcc.MccError, match="unknown argument.*bogus.*accepts master_template_id, s3_bucket_name"):
        launch_master_node(master_template_id="lt-1", s3_bucket_name=s3_name, entry_point_script="my_script.py",
                           bogus=1)
    with pytest.raises(mcc.MccError, match="hyperthreading must be True or False, got 'off'"):
        launch_master_node(master_template_id="lt-1", s3_bucket_name=s3_name, entry_point_script="my_script.py",
                           hyperthreading="off")
    with pytest.raises(mcc.MccError, match="launch template 'lt-1' was not made by mcc"):
        launch_master_node(master_template_id="lt-1", s3_bucket_name=s3_name, entry_point_script="my_script.py")
    # the same call in the same folder: the same bucket, no second one
    assert mcc.storage.create_s3_bucket(boto3.resource("s3")) == s3_name
    assert mcc.storage.create_s3_bucket(boto3.resource("s3"), copy=2) != s3_name


def test_bucket_name_of_another_account(cloud, folder: Path) -> None:
    import mcc

    taken = cloud.proxy.fail("s3:CreateBucket", "BucketAlreadyExists", times=1, status=409,
                             message="The requested bucket name is not available.")
    with pytest.raises(mcc.MccError, match="'mcc-their-bucket' is taken by another AWS account"):
        mcc.storage.create_s3_bucket(boto3.resource("s3"), name="mcc-their-bucket")
    assert taken.hits == 1
    with pytest.raises(mcc.MccError, match="does not start with 'mcc-'"):  # README's policy would refuse it
        mcc.storage.create_s3_bucket(boto3.resource("s3"), name="their-bucket")
    with pytest.raises(mcc.MccError, match="not a valid S3 bucket name"):
        mcc.storage.create_s3_bucket(boto3.resource("s3"), name="Bad_Name")


def test_mcc_clean_is_both_the_api_function_and_the_module(folder: Path) -> None:
    import mcc

    assert callable(mcc.clean) and callable(mcc.clean.delete_s3_bucket)
    assert mcc.clean(all=True)["survivors"] == []  # the API function: nothing to clean yet
    name = mcc.storage.create_s3_bucket(boto3.resource("s3"))
    mcc.storage.upload(name, "points.py")
    with pytest.raises(mcc.MccError, match="is not empty; pass safe=False"):
        mcc.clean.delete_s3_bucket(name)
    report = mcc.clean.delete_s3_bucket(name, safe=False)
    assert [d["physical_id"] for d in report["deleted"]] == [name] and report["survivors"] == []
    assert name not in [b["Name"] for b in cloud_buckets()]


def cloud_buckets() -> list[dict]:
    return boto3.client("s3").list_buckets()["Buckets"]


# -- SIGKILL at every mutating call of the setup calls, then the same script again -----------------------

def setup_script() -> str:
    """README's block up to launch_master_node: the setup and S3 calls (the run they start is `mcc run`'s,
    whose every boundary tests/aws/test_crash_boundaries.py kills)."""
    body = readme_block()
    return body[: body.index("manager = launch_master_node(")]


def setup_counts(home: Path) -> dict[str, int]:
    """{kind: n} of live resources tagged with the ledger of ``home`` and with no run."""
    from mcc.providers.aws.clients import AwsContext
    from mcc.providers.aws.sweep import sweep_tagged
    from tests.aws.test_run_aws import _session
    from tests.conftest import ledger_uuid

    found = sweep_tagged(AwsContext(_session(), "us-east-1", ledger_uuid(home)), ledger_uuid(home))
    counts = {kind: len([f for f in items if "mcc:run" not in f.tags]) for kind, items in found.items()}
    return {kind: n for kind, n in sorted(counts.items()) if n}


def setup_boundary(cloud, tmp_path: Path, baseline: dict[str, int], n: int, at) -> float:
    from tests.aws.test_crash_boundaries import Killer

    started, key, home = time.monotonic(), f"setup{n}", tmp_path / f"home-{n}"
    project = make_original_project(tmp_path / f"iteration-{n}", full=False)
    (project / "setup.py").write_text(setup_script())
    env = {**os.environ, "MCC_HOME": str(home), "AWS_ACCESS_KEY_ID": key}
    killer = Killer(at[0], at[1], key)
    cloud.proxy.add_hook(killer)

    def arm(proc: subprocess.Popen) -> None:
        killer.pid = proc.pid

    proc = run_bounded([sys.executable, "setup.py"], cwd=project, env=env, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL, on_start=arm)
    assert killer.fired.is_set(), (at, proc.returncode, proc.stderr[-3000:])
    again = run_bounded([sys.executable, "setup.py"], cwd=project, env=env, capture_output=True, text=True,
                        timeout=600, stdin=subprocess.DEVNULL)
    if again.returncode != 0:
        consoles = [cloud.runner.console(i)[-2000:] for i in cloud.runner.booted()]
        failed = [c for c in consoles if "mcc image builder:" in c]
        raise AssertionError((at, again.stderr[-2000:], failed))
    assert setup_counts(home) == baseline, at
    cleaned = mcc_json("clean", "--all", "--yes", home=home, timeout=600, env={"AWS_ACCESS_KEY_ID": key})
    assert cleaned["survivors"] == [] and setup_counts(home) == {}, at
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason=(
    "one image bake per boundary, every mutating call of the setup calls before and after; "
    "run with MCC_SLOW_TESTS=1 (MCC_CRASH_SAMPLE=N runs every N-th boundary)"))
def test_setup_calls_killed_at_every_boundary_then_rerun(cloud, mcc_home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.aws.test_crash_boundaries import LAPTOP_KEY, PHASES, crash_sample, distinct, laptop_mutations

    if not cloud.elasticache.available():
        pytest.skip("create_redis_server needs the ElastiCache stand-in (a TLS-capable redis-server 7)")
    started = time.monotonic()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # one wheel for every iteration
    project = make_original_project(tmp_path / "baseline", full=False)
    (project / "setup.py").write_text(setup_script())
    mark = len(cloud.proxy.requests)
    env = {**os.environ, "MCC_HOME": str(mcc_home), "AWS_ACCESS_KEY_ID": LAPTOP_KEY}
    run_bounded([sys.executable, "setup.py"], cwd=project, env=env, check=True, timeout=600,
                capture_output=True, stdin=subprocess.DEVNULL)
    calls = distinct(laptop_mutations(cloud, mark))
    baseline = setup_counts(mcc_home)
    assert {"security_group", "key_pair", "image", "launch_template", "cache", "bucket"} <= set(baseline), baseline
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=600)["survivors"] == []
    targets = [(call, phase) for call in calls for phase in PHASES]
    targets = targets[::crash_sample()]
    if os.environ.get("MCC_CRASH_ONLY"):  # e.g. "s3:PutObject:before"
        targets = [t for t in targets if ":".join((*t[0], t[1])) == os.environ["MCC_CRASH_ONLY"]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        seconds = list(pool.map(lambda job: setup_boundary(cloud, tmp_path, baseline, *job), enumerate(targets)))
    print(f"\nsetup-call crash boundaries exercised: {len(targets)} of {2 * len(calls)} "
          f"({len(calls)} distinct mutating calls), {time.monotonic() - started:.0f} s (slowest {max(seconds):.0f} s)")
    print("baseline:", baseline)
    print("\n".join(" ".join((*call, phase)) for call, phase in targets))


def test_nothing_opened_by_default_key_file_0600_and_per_kind_clean(cloud, folder: Path) -> None:
    import mcc

    ec2 = boto3.resource("ec2")
    group = mcc.templates.create_security_group(ec2)
    perms = cloud.client("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert [(p["FromPort"], p.get("IpRanges"), [g["GroupId"] for g in p["UserIdGroupPairs"]]) for p in perms] == \
        [(6379, [], [group])]  # the queue port, from the group itself: nothing else without ips= and ports=
    assert mcc.templates.create_security_group(ec2) == group  # the same call: the same group
    with pytest.raises(mcc.MccError, match="SSH"):
        mcc.templates.create_security_group(ec2, ips={"world": "0.0.0.0/0"}, ports={22: "tcp"})

    name = mcc.templates.create_key_pair(ec2)
    from mcc.ledger import resources as ledger_rows

    [row] = ledger_rows(kind="key_pair")  # the ledger this process has open
    path = Path(row.attrs["key_path"])
    assert row.physical_id == name and (path.stat().st_mode & 0o777) == 0o600
    assert mcc.templates.create_key_pair(ec2) == name
    report = mcc.clean.delete_keypair(name)
    assert report["survivors"] == [] and not path.exists()
    assert mcc.clean.delete_security_group()["survivors"] == []  # every group of the setup group
    assert not cloud.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroups"]
