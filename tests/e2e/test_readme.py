"""README is honest: every command and code block in it runs as written, and what it states is checked.

Each fenced block belongs to the section (## or ### heading) it sits in; ``SH_BLOCKS`` says which test
runs each section's ```sh blocks and ``test_every_block_is_run`` fails when README gains a block no test
runs. Commands run through bash, line by line, as a user would type them, with `mcc` on PATH (a shim for
this interpreter, or the fresh virtual environment that `pip install -e .` made); ``RUN`` stands for the
id of the run the block made last.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
from mcc.providers.aws.policy import boundary_policy
from mcc.providers.local.processes import run_bounded
import pytest

from tests.conftest import EXAMPLE, REPO, SEED, latest_run_id, run_state, tagged_processes

README = REPO / "README.md"

# section → where its ```sh blocks are run
SH_BLOCKS = {
    "Install and run the example": "test_install_and_quickstart_as_written",
    "Your own sweep": "test_own_sweep_as_written",
    "On AWS": "tests/aws/test_run_aws.py::test_readme_aws_commands_as_written (the emulated cloud)",
    "On a Slurm cluster": "tests/e2e/test_readme_slurm.py::test_readme_slurm_as_written (the local Slurm)",
    "Costs": "test_costs_as_written",
    "Migrating from the original materialsCloudCompute": "test_migration_as_written",
    "Performance": "test_performance_as_written (the full suite only with MCC_SLOW_TESTS=1)",
    "Tests": ".ci/run (the whole suite cannot run inside one of its own tests)",
}
PYTHON_BLOCKS = {"Python API": "test_python_api_as_written",
                 "Migrating from the original materialsCloudCompute":
                     "tests/aws/test_original_api.py::test_original_readme_block_on_the_ledger (the emulated cloud; MCC_SLOW_TESTS=1)"}
JSON_BLOCKS = {"AWS setup": "test_iam_policy_covers_every_aws_call"}
TEXT_BLOCKS = {"mcc — materialsCloudCompute", "Concepts", "Costs", "On a Slurm cluster"}  # the diagram, the state machines, a sample


def blocks(lang: str) -> list[tuple[str, str]]:
    """(section heading, body) of every ```lang block in README, in order."""
    text = README.read_text()
    text = text[: text.index("<!-- cli-reference:start -->")]  # the generated reference has its own test
    out, heading = [], ""
    for match in re.finditer(r"^(#{1,3}) ([^\n]+)$|^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            heading = match.group(2).strip()
        elif match.group(3) == lang:
            out.append((heading, match.group(4)))
    return out


def commands(section: str) -> list[str]:
    """The command lines of a section's ```sh blocks, comments stripped."""
    lines = [line for heading, body in blocks("sh") if heading == section for line in body.splitlines()]
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.startswith("#")]


def mcc_on_path(tmp_path: Path) -> Path:
    """A folder with an `mcc` that runs this interpreter's mcc (what `pip install -e .` puts on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "mcc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mcc.cli "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def shell(line: str, *, cwd: Path, home: Path, bin_dir: Path, run_id: str | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one README line with bash, as written (``RUN`` → ``run_id``); fail the test on a non-zero exit."""
    if "RUN" in line.split():
        assert run_id, f"{line!r} needs a run, and none was made yet"
        line = re.sub(r"\bRUN\b", run_id, line)
    env = {**os.environ, "MCC_HOME": str(home), "COLUMNS": "200", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = run_bounded(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_every_block_is_run() -> None:
    sections = {heading for heading, _ in blocks("sh")}
    assert sections == set(SH_BLOCKS), f"README sections with ```sh blocks no test runs: {sections - set(SH_BLOCKS)}"
    assert {h for h, _ in blocks("python")} == set(PYTHON_BLOCKS)
    assert {h for h, _ in blocks("json")} == set(JSON_BLOCKS)
    assert {h for h, _ in blocks("text")} <= TEXT_BLOCKS
    languages = set(re.findall(r"^```(\w+)$", README.read_text(), re.M))
    assert languages <= {"sh", "python", "json", "text"}, languages
    # the AWS block is run against the emulated cloud by the AWS suite, with this exact extraction
    aws_test = (REPO / "tests" / "aws" / "test_run_aws.py").read_text()
    assert "def test_readme_aws_commands_as_written" in aws_test
    # the original mCC's blocks (migration section) run as a script there, from README as written
    original_test = (REPO / "tests" / "aws" / "test_original_api.py").read_text()
    assert "def test_original_readme_block_on_the_ledger" in original_test and "readme_block()" in original_test
    assert [c.split()[1] for c in commands("On AWS")] == ["provision", "run", "ledger", "clean"]
    # README's test command is the one CI runs
    assert commands("Tests") == ['pip install -e ".[test]" && python -m pytest']
    assert (REPO / ".ci" / "run").read_text().count('pip install -e ".[test]" && python -m pytest') == 1


def _fresh_clone(dest: Path) -> Path:
    """The repository's files as a clean clone has them (no results, builds or caches)."""
    ignore = shutil.ignore_patterns(".git", "results", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".venv", ".benchmarks")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


@pytest.mark.slow
def test_install_and_quickstart_as_written(mcc_home: Path, tmp_path: Path) -> None:
    """`pip install -e .` in a fresh clone (into a venv that sees this interpreter's dependencies, so nothing
    is downloaded but the build backend), then the quickstart with the `mcc` it installed."""
    quickstart = commands("Install and run the example")
    assert quickstart == ["pip install -e .", "mcc run examples/kpoints", "mcc status", "mcc ledger show",
                          "mcc clean --all --yes"]
    clone = _fresh_clone(tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    for line in quickstart:
        proc = shell(line, cwd=clone, home=mcc_home, bin_dir=bin_dir)
        if line == "mcc status":
            assert "completed" in proc.stdout and "$0 (local)" in proc.stdout
    assert (bin_dir / "mcc").exists()  # `pip install -e .` installed the command that ran the rest
    assert tagged_processes(mcc_home) == []
    assert list((clone / "examples" / "kpoints" / "results").glob("*/combined.h5"))


@pytest.mark.slow
def test_own_sweep_as_written(mcc_home: Path, tmp_path: Path) -> None:
    lines = commands("Your own sweep")
    assert lines[0] == "mcc init mysweep" and "mcc resume RUN" in lines and "mcc clean --run RUN" in lines
    bin_dir = mcc_on_path(tmp_path)
    run_id = None
    for line in lines:
        proc = shell(line, cwd=tmp_path, home=mcc_home, bin_dir=bin_dir, run_id=run_id)
        if line.startswith("mcc run") and "--json" in line:
            out = json.loads(proc.stdout)
            assert out["state"] == "completed" and out["done"] == out["points"] and out["cost"]["local"]
        if line.startswith("mcc run") and "--detach" in line:
            assert run_state(mcc_home, latest_run_id(mcc_home)) == "running"
        if line.startswith("mcc resume"):
            assert run_state(mcc_home, run_id) == "completed"
        if line.startswith("mcc status RUN"):
            assert run_id in proc.stdout and "cost $0.00 (local)" in proc.stdout
        run_id = latest_run_id(mcc_home) or run_id
    assert run_state(mcc_home, run_id) == "cleaned"
    assert tagged_processes(mcc_home) == []


@pytest.mark.slow
def test_python_api_as_written(mcc_home: Path, tmp_path: Path) -> None:
    [code] = [body for heading, body in blocks("python") if heading == "Python API"]  # Migrating has its own test
    bin_dir = mcc_on_path(tmp_path)
    shell("mcc init mysweep", cwd=tmp_path, home=mcc_home, bin_dir=bin_dir)
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "MCC_HOME": str(mcc_home)}
    proc = run_bounded([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = latest_run_id(mcc_home)
    assert f"{run_id} completed 51 / 51 ->" in proc.stdout
    assert "cost so far 0.0 local: True" in proc.stdout and "points/s" in proc.stdout
    assert run_state(mcc_home, run_id) == "cleaned" and tagged_processes(mcc_home) == []


@pytest.mark.slow
def test_costs_as_written(mcc_home: Path, tmp_path: Path) -> None:
    lines = commands("Costs")
    assert any("--plot run.png" in line for line in lines) and any("--tsv > runs.tsv" in line for line in lines)
    bin_dir = mcc_on_path(tmp_path)
    shell("mcc init mysweep && mcc run mysweep", cwd=tmp_path, home=mcc_home, bin_dir=bin_dir)
    run_id = latest_run_id(mcc_home)
    outputs = {line: shell(line, cwd=tmp_path, home=mcc_home, bin_dir=bin_dir, run_id=run_id).stdout for line in lines}
    assert "cost $0.00 (local" in outputs["mcc analyze RUN"]
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tsv = (tmp_path / "runs.tsv").read_text().splitlines()
    assert tsv[0].startswith("started\trun_id\tstate") and run_id in tsv[1]
    assert "local" in outputs["mcc analyze --by-type"]
    assert "us-east-1" in outputs["mcc prices --region us-east-1"] and "m5.large" in outputs["mcc prices --region us-east-1"]
    estimate = outputs["mcc run mysweep --backend aws --region us-east-1 --estimate"]
    assert "nothing was created" in estimate and "c6i.large" in estimate and "60-second minimum" in estimate
    shell("mcc clean --all --yes", cwd=tmp_path, home=mcc_home, bin_dir=bin_dir)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.xdist_group("slurm")  # B9 sweeps on the Slurm cluster: with the Slurm tests, never beside one
def test_performance_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The install line in the checkout, the benchmark lines from elsewhere (they write files where they run);
    the full suite (minutes) only with MCC_SLOW_TESTS=1. Figures are printed, never asserted on."""
    lines = commands("Performance")
    assert lines[0] == 'pip install -e ".[bench]"' and all(line.startswith("python -m bench") for line in lines[1:])
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # `python -m bench` as run from the checkout
    monkeypatch.setenv("MCC_BENCH_TMP", str(tmp_path / "bench-tmp"))
    python_bin = Path(sys.executable).parent  # `pip` and `python` of this interpreter (the CI's venv)
    shell(lines[0], cwd=REPO, home=tmp_path / "home", bin_dir=python_bin)
    full = [line for line in lines[1:] if "--smoke" not in line and "--size" not in line]
    for line in lines[1:]:
        if line in full and not os.environ.get("MCC_SLOW_TESTS"):
            continue
        out = shell(line, cwd=tmp_path, home=tmp_path / "home", bin_dir=python_bin, timeout=1400).stdout
        print(out)
        ids = set(re.findall(r"^[│|] (B\d)\S* ", out, re.M))
        expected = {"B5"} if "B5 --size" in line else {f"B{i}" for i in range(1, 10)}
        assert ids == expected, (line, ids)
        assert "│ error" not in out and "| error |" not in out, line
    assert len(full) == 1


OLD_POINTS = '''import numpy as np


def get_points():
    rho = np.arange(0.001, 0.5, 0.05)
    theta = np.arange(0.5, 30, 10.0)

    RHO, THETA = np.meshgrid(rho, theta)
    kys = (RHO * np.sin(np.deg2rad(THETA))).flatten()
    kxs = (RHO * np.cos(np.deg2rad(THETA))).flatten()
    return [[kx, ky, 0.0] for kx, ky in zip(kxs, kys)]
'''


@pytest.mark.slow
@pytest.mark.skipif(not (SEED / "combine_data.py").exists(), reason="shared/seed is not beside the repository")
def test_migration_as_written(mcc_home: Path, tmp_path: Path) -> None:
    """An original project: points.py in the original style, the original README's combine_data.py as is, and a
    script entry in the original convention. (tests/e2e/test_run_local.py runs the original points.py too.)"""
    [line] = commands("Migrating from the original materialsCloudCompute")
    project = tmp_path / "myoldproject"
    project.mkdir()
    (project / "points.py").write_text(OLD_POINTS)
    shutil.copy(SEED / "combine_data.py", project / "combine_data.py")
    shutil.copy(EXAMPLE / "bands_script.py", project / "my_script.py")
    bin_dir = mcc_on_path(tmp_path)
    shell(line, cwd=tmp_path, home=mcc_home, bin_dir=bin_dir)
    run_id = latest_run_id(mcc_home)
    assert run_state(mcc_home, run_id) == "completed"
    [combined] = (project / "results").glob("*/combined.h5")
    with h5py.File(combined, "r") as fh:
        assert fh["data"].shape == (30, 5) and fh["data"].maxshape == (30, 5)  # the original combiner's dataset
    shell("mcc clean --all --yes", cwd=tmp_path, home=mcc_home, bin_dir=bin_dir)


# -- what README states, checked against the code ------------------------------------------------------

CLIENT_VARS = {"ec2": "ec2", "s3": "s3", "iam": "iam", "ssm": "ssm", "ec": "elasticache", "sts": "sts",
               "quotas": "servicequotas", "pricing_client": "pricing"}
PREFIX = {"resourcegroupstaggingapi": "tag", "service-quotas": "servicequotas"}
S3_ACTIONS = {"upload_file": "PutObject", "download_file": "GetObject", "head_object": "GetObject",
              "list_objects_v2": "ListBucket", "list_object_versions": "ListBucketVersions",
              "delete_objects": "DeleteObject", "put_bucket_encryption": "PutEncryptionConfiguration",
              "put_public_access_block": "PutBucketPublicAccessBlock", "list_buckets": "ListAllMyBuckets",
              "list_multipart_uploads": "ListBucketMultipartUploads"}
NOT_CALLS = {"amazonaws", "get_paginator", "paginate", "exceptions", "meta", "can_paginate", "get_waiter"}
# permissions AWS checks that no method name shows (README explains each one)
IMPLIED = {
    "iam:PassRole": "the manager instance starts with the run's role",
    "ec2:CreateTags": "TagSpecifications inside a create call (ec2:CreateAction); never tagged after",
    "iam:TagRole": "Tags inside CreateRole", "iam:TagInstanceProfile": "Tags inside CreateInstanceProfile",
    "ssm:AddTagsToResource": "Tags inside PutParameter",
    "elasticache:AddTagsToResource": "Tags inside CreateReplicationGroup",
    "s3:DeleteObjectVersion": "delete_objects with version ids empties the versioned bucket",
    "iam:CreateServiceLinkedRole": "ElastiCache's service-linked role, once per account",
}


def aws_calls() -> dict[str, str]:
    """IAM action → the file that makes the call, for every boto3 call the `mcc` command can make."""
    files = [*sorted((REPO / "mcc" / "providers" / "aws").glob("*.py")), *sorted((REPO / "mcc" / "backends").glob("aws*.py")),
             *(REPO / "mcc" / name for name in ("driver/cleaner.py", "report/doctor.py", "report/pricing.py", "work/stores.py",
                                                 "cli.py"))]

    def action(service: str, op: str) -> str:
        service = PREFIX.get(service, service)
        if service == "s3" and op in S3_ACTIONS:
            return f"s3:{S3_ACTIONS[op]}"
        return f"{service}:{''.join(w.capitalize() for w in op.split('_'))}"

    found: dict[str, str] = {}
    var = r"\b(?:self\.)?(" + "|".join(CLIENT_VARS) + r")"
    for path in files:
        text = path.read_text()
        pairs = re.findall(r'client\("([a-z0-9-]+)"[^)]*\)\.([a-z_0-9]+)', text)
        pairs += re.findall(r'client\("([a-z0-9-]+)"[^)]*\)\.get_paginator\("([a-z_0-9]+)"\)', text)
        pairs += [(CLIENT_VARS[v], op) for v, op in re.findall(var + r"\.([a-z_0-9]+)\b", text)]
        pairs += [(CLIENT_VARS[v], op) for v, op in re.findall(var + r'\.get_paginator\("([a-z_0-9]+)"\)', text)]
        for service, op in pairs:
            if op not in NOT_CALLS:
                found.setdefault(action(service, op), path.name)
    return found


def test_iam_policy_covers_every_aws_call() -> None:
    [(_, body), (_, boundary)] = blocks("json")  # the user policy, then the roles' permissions boundary
    assert json.loads(boundary) == boundary_policy()
    policy = json.loads(body)
    assert policy["Version"] == "2012-10-17"
    listed = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        listed |= set(actions)
    calls = aws_calls()
    assert {"ec2:RunInstances", "s3:PutObject", "iam:CreateRole", "s3:AbortMultipartUpload"} <= set(calls)  # sanity
    missing = {a: f for a, f in calls.items() if a not in listed}
    assert not missing, f"add these to README's AWS setup policy: {missing}"
    unexplained = listed - set(calls) - set(IMPLIED)
    assert not unexplained, f"README's policy lists actions mcc does not call: {sorted(unexplained)}"
    readme = README.read_text()
    for implied in IMPLIED:
        assert implied in listed and implied in readme.split("```json")[1].split("## Costs")[0]


def test_troubleshooting_messages_are_what_mcc_prints() -> None:
    text = README.read_text()
    section = text[text.index("## Troubleshooting"): text.index("## Migrating")]
    fragments = re.findall(r"^\| `([^`]+)` \|", section, re.M)
    assert len(fragments) >= 15
    source = "\n".join(p.read_text() for folder in ("mcc", "remote") for p in (REPO / folder).rglob("*.py"))
    for fragment in fragments:
        assert fragment in source, f"README's troubleshooting quotes {fragment!r}, which mcc no longer prints"


def test_billing_rule_is_stated_and_cited() -> None:
    text = README.read_text()
    costs = text[text.index("## Costs"): text.index("## Performance")]
    assert "per second, with a\n60-second minimum" in costs and "Per Second Billing" in costs
    assert "https://aws.amazon.com/ec2/pricing/on-demand/" in costs and "whole hour" in costs
    from mcc.report import pricing

    assert pricing.instance_cost(30, 3600.0) == 60.0 and pricing.instance_cost(3600.4, 3600.0) == 3601.0  # as stated
