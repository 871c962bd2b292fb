"""moto_server as a subprocess on a free loopback port, with validation of instance types, AMIs, key pairs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import free_port

AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
VALIDATION_ENV = {
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}


class MotoServer:
    """One ``moto_server`` process; ``reset()`` empties every backend between tests."""

    def __init__(self, log_dir: Path, executable: str | None = None, env: dict[str, str] | None = None) -> None:
        self.executable = executable or shutil.which("moto_server") or "moto_server"
        self.env = {**VALIDATION_ENV, **(env or {})}  # e.g. INITIAL_NO_AUTH_ACTION_COUNT (harness/enforce.py)
        self.log_path = Path(log_dir) / "moto_server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MotoServer":
        """Start on a free port (retrying if the port was taken meanwhile) and wait until it answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.env)
        for _ in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([self.executable, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"moto_server did not start; log:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def reset(self) -> None:
        """POST /moto-api/reset: every backend back to its initial state."""
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200, resp.status

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def ensure_al2023_parameter(ssm: Any, ec2: Any, proxy: Any) -> str:
    """Make the AL2023 public SSM parameter resolve to an AMI moto knows; return that AMI id.

    moto 5 serves the parameter itself, pointing at one of its default AMIs: then nothing is done. If it
    did not (moto refuses put_parameter under /aws/), a proxy rewriter answers GetParameter(s) for it.
    """
    try:
        ami = ssm.get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
        if ec2.describe_images(ImageIds=[ami])["Images"]:
            return ami
    except Exception:  # noqa: BLE001 - missing parameter or unknown AMI: fall through to the rewriter
        pass
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    candidates = [i for i in images if i.get("Name", "").startswith("al2023-ami-") and
                  i.get("Architecture") == "x86_64"] or images
    ami = candidates[0]["ImageId"]

    import json

    def rewrite(service: str, action: str, params: dict, status: int, body: bytes) -> Any:
        if service != "ssm" or action not in ("GetParameter", "GetParameters"):
            return None
        names = [params.get("Name")] if action == "GetParameter" else list(params.get("Names") or [])
        if AL2023_PARAMETER not in names:
            return None
        param = {"Name": AL2023_PARAMETER, "Type": "String", "Value": ami, "Version": 1, "DataType": "text",
                 "ARN": f"arn:aws:ssm:us-east-1::parameter{AL2023_PARAMETER}", "LastModifiedDate": time.time()}
        if action == "GetParameter":
            return 200, json.dumps({"Parameter": param}).encode()
        doc = json.loads(body or b"{}") if status == 200 else {"Parameters": [], "InvalidParameters": names}
        doc["Parameters"] = [p for p in doc.get("Parameters", []) if p.get("Name") != AL2023_PARAMETER] + [param]
        doc["InvalidParameters"] = [n for n in doc.get("InvalidParameters", []) if n != AL2023_PARAMETER]
        return 200, json.dumps(doc).encode()

    proxy.add_rewriter(rewrite)
    return ami
