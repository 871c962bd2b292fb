"""User data for mcc instances: a short shell script with no credentials in it.

The instance profile provides AWS credentials through IMDS. On a plain image the script installs mcc
from the wheel the launcher uploaded next to the run; on a baked image (or wherever ``$MCC_PYTHON``
already imports mcc) it starts at once. The instance ends itself when mcc exits, or when the hard
maximum lifetime runs out (``timeout``), and ``InstanceInitiatedShutdownBehavior=terminate`` turns
that shutdown into termination: a laptop that disappears cannot leave a fleet billing. A manager that
serves the queue itself needs a redis-server built with TLS: unless the image has one, the script installs
Amazon Linux 2023's ``redis6`` package.
"""
from __future__ import annotations

import shlex

TEMPLATE = """#!/bin/bash
# mcc {role} for run {run_id}. No credentials here: the instance profile provides them.
set -u
export MCC_ROLE={role} MCC_STORE={store} MCC_RUN_ID={run_id} AWS_DEFAULT_REGION={region} AWS_REGION={region}
# instance-profile credentials come from IMDS: give a busy boot time to answer
export AWS_METADATA_SERVICE_TIMEOUT=5 AWS_METADATA_SERVICE_NUM_ATTEMPTS=5
PY="${{MCC_PYTHON:-/opt/mcc/bin/python}}"
# mcc already there (a baked image)? find_spec answers without importing it all (half a second of CPU)
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mcc.remote.instance') is None)" >/dev/null 2>&1; then
  python3 -m venv /opt/mcc && PY=/opt/mcc/bin/python
  "$PY" -m pip install -q --upgrade pip boto3
  "$PY" -c "import boto3, os, urllib.parse as u; p = u.urlparse(os.environ['MCC_STORE']); boto3.client('s3').download_file(p.netloc, p.path.lstrip('/') + 'dist/{wheel}', '/tmp/{wheel}')"
  "$PY" -m pip install -q /tmp/{wheel} {requirements}
fi
{queue_server}timeout {lifetime} "$PY" -m mcc.remote.instance
shutdown -h now
"""


QUEUE_SERVER = """# the queue on this manager speaks TLS: a redis-server built with it, unless the image has one
command -v redis-server >/dev/null 2>&1 || command -v redis6-server >/dev/null 2>&1 \\
  || dnf install -y -q redis6 || echo "mcc: could not install redis6 (the queue needs a TLS-capable redis-server)" >&2
"""


def render_user_data(*, role: str, store_url: str, run_id: str, region: str, wheel: str,
                     requirements: list[str], max_lifetime_seconds: int, queue_server: bool = False) -> str:
    """The bootstrap script for a manager or worker instance; ``queue_server``: the manager serves the queue."""
    if role not in ("manager", "worker"):
        raise ValueError(role)
    return TEMPLATE.format(
        queue_server=QUEUE_SERVER if queue_server and role == "manager" else "",
        role=role, store=shlex.quote(store_url), run_id=shlex.quote(run_id), region=shlex.quote(region),
        wheel=wheel, requirements=" ".join(shlex.quote(r) for r in requirements),
        lifetime=int(max_lifetime_seconds),
    )


BUILDER_TEMPLATE = """#!/bin/bash
# mcc image builder: installs mcc and the requirements into /opt/mcc, then powers off; the image is taken
# from the stopped disk. No credentials here: the builder's instance profile reads the wheel and may tag
# this instance {ready_tag}=failed (its only other permission) when the install fails.
set -u
export AWS_DEFAULT_REGION={region} AWS_REGION={region} AWS_METADATA_SERVICE_TIMEOUT=5 AWS_METADATA_SERVICE_NUM_ATTEMPTS=5
PY="${{MCC_PYTHON:-/opt/mcc/bin/python}}"
failed() {{
  echo "mcc image builder: $1" >&2
  "$PY" - <<'EOF'
import os, urllib.request as r
import boto3
base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254/").rstrip("/")
token = r.urlopen(r.Request(base + "/latest/api/token", method="PUT",
                            headers={{"X-aws-ec2-metadata-token-ttl-seconds": "300"}}), timeout=5).read().decode()
iid = r.urlopen(r.Request(base + "/latest/meta-data/instance-id",
                          headers={{"X-aws-ec2-metadata-token": token}}), timeout=5).read().decode()
boto3.client("ec2").create_tags(Resources=[iid], Tags=[{{"Key": "{ready_tag}", "Value": "failed"}}])
EOF
  exit 1
}}
if ! "$PY" -c "import mcc.remote.instance" >/dev/null 2>&1; then
  python3 -m venv /opt/mcc && PY=/opt/mcc/bin/python || failed "python3 -m venv /opt/mcc failed"
  "$PY" -m pip install -q --upgrade pip boto3 || failed "pip could not install boto3"
fi
"$PY" -c "import boto3; boto3.client('s3').download_file({bucket!r}, {key!r}, '/tmp/{wheel}')" \\
  || failed "could not download s3://{bucket}/{key}"
if ! "$PY" -c "import mcc.remote.instance" >/dev/null 2>&1; then
  "$PY" -m pip install -q /tmp/{wheel} || failed "pip could not install /tmp/{wheel}"
fi
{install_requirements}
"$PY" -c "import mcc.remote.instance" || failed "mcc does not import after the install"
sync
shutdown -h now
"""


def render_builder_user_data(*, bucket: str, wheel_key: str, requirements: list[str], region: str,
                             ready_tag: str) -> str:
    """The bootstrap script of the image builder: mcc from the wheel at ``s3://bucket/wheel_key`` and the
    requirements into /opt/mcc (where instances' user data looks first), then power off (= ready)."""
    reqs = " ".join(shlex.quote(r) for r in requirements)
    install = (f'"$PY" -m pip install -q {reqs} || failed "pip could not install the requirements"'
               if requirements else "# no requirements")
    return BUILDER_TEMPLATE.format(region=shlex.quote(region), ready_tag=ready_tag, bucket=bucket, key=wheel_key,
                                   wheel=wheel_key.rsplit("/", 1)[-1], install_requirements=install)
