"""User data for mcc instances: a short shell script with no credentials in it.

The instance profile provides AWS credentials through IMDS. On a plain image the script installs mcc
from the wheel the launcher uploaded next to the run; on a baked image (or wherever ``$MCC_PYTHON``
already imports mcc) it starts at once. The instance ends itself when mcc exits, or when the hard
maximum lifetime runs out (``timeout``), and ``InstanceInitiatedShutdownBehavior=terminate`` turns
that shutdown into termination: a laptop that disappears cannot leave a fleet billing.
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
if ! "$PY" -c "import mcc.remote.instance" >/dev/null 2>&1; then
  python3 -m venv /opt/mcc && PY=/opt/mcc/bin/python
  "$PY" -m pip install -q --upgrade pip boto3
  "$PY" -c "import boto3, os, urllib.parse as u; p = u.urlparse(os.environ['MCC_STORE']); boto3.client('s3').download_file(p.netloc, p.path.lstrip('/') + 'dist/{wheel}', '/tmp/{wheel}')"
  "$PY" -m pip install -q /tmp/{wheel} {requirements}
fi
timeout {lifetime} "$PY" -m mcc.remote.instance
shutdown -h now
"""


def render_user_data(*, role: str, store_url: str, run_id: str, region: str, wheel: str,
                     requirements: list[str], max_lifetime_seconds: int) -> str:
    """The bootstrap script for a manager or worker instance."""
    if role not in ("manager", "worker"):
        raise ValueError(role)
    return TEMPLATE.format(
        role=role, store=shlex.quote(store_url), run_id=shlex.quote(run_id), region=shlex.quote(region),
        wheel=wheel, requirements=" ".join(shlex.quote(r) for r in requirements),
        lifetime=int(max_lifetime_seconds),
    )
