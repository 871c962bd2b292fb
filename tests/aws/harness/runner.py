"""The instance runner: gives every `running` moto instance a life as a local process group.

A background thread polls moto directly (DescribeInstances every ``poll_interval`` s). For each newly
running instance it fetches the user data, starts an :class:`~.imds.Imds` for it and runs the user data
(shebang honoured, else ``bash``) in a new session, cwd and HOME a per-instance directory, with a clean
env: PATH (the instance's ``bin/`` first), LANG, the IMDS endpoint, ``AWS_ENDPOINT_URL`` (the proxy),
region, ``SSL_CERT_FILE`` and ``MCC_PYTHON`` (an interpreter where mcc is importable, as on a baked
image) — and no AWS keys: credentials come from IMDS, when the instance has an instance profile (under moto's
IAM enforcement, an STS session of the role from ``sessions``: harness/enforce.py).
Output goes to ``<instance dir>/console.log``.

``bin/`` holds ``shutdown``/``poweroff``/``halt`` (stdlib Python) that POST to a harness-only path of
the instance's IMDS; the runner then stops or terminates THIS instance in moto per its
InstanceInitiatedShutdownBehavior, as EC2 does (moto's default, like EC2's, is ``stop``). When an instance is
shutting-down/terminated/stopping/stopped in moto, every process of it is SIGKILLed — found by the
runner's own marker variable (``HARNESS_INSTANCE_ID_<token>``, one token per runner) in /proc/<pid>/environ,
so even daemons that left the process group die, while the instances of another runner (another pytest
session on the same machine) are never touched — and its IMDS stops. A stopped instance started again
gets no second boot.

moto gap closed here: ``RunInstances`` lists the new instance (``running``) BEFORE it associates the request's
``IamInstanceProfile``, in the same request (moto 5.2, responses/instances.py); a pass in between would boot it
with no role, so it could never get credentials (seen on a loaded CI machine: a manager dead at boot with
"Unable to locate credentials"). EC2 makes both at once. An instance listed without a profile boots only once
``PROFILE_SETTLE_S`` have passed since the runner first saw it.

moto gap closed here: a ``RunInstances`` with MinCount > 1 associates its ``IamInstanceProfile`` with the
FIRST instance only (moto 5.2; the others describe without one). EC2 gives every instance of the call the
profile, so an instance booted without one takes the profile of its reservation siblings.
"""
from __future__ import annotations

import base64
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import direct_client
from .imds import Imds, InstanceIdentity

MARKER_PREFIX = "HARNESS_INSTANCE_ID_"
DEAD_STATES = {"shutting-down", "terminated", "stopping", "stopped"}
NOT_TERMINATED = {"pending", "running", "shutting-down", "stopping", "stopped"}
PROFILE_SETTLE_S = 2.0  # how long an instance listed without a profile waits for moto to associate one
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

POWER_SCRIPT = '''#!{python}
"""Emulated {name}: asks the emulated cloud to power this instance off (never the real machine)."""
import sys, urllib.request
args = sys.argv[1:]
if "-c" in args or "-r" in args or "--reboot" in args:
    sys.exit(0)
urllib.request.urlopen(urllib.request.Request({url!r}, method="POST", data=b""), timeout=60).read()
'''


@dataclass
class _Instance:
    instance_id: str
    directory: Path
    imds: Imds
    user_data: bytes
    proc: subprocess.Popen | None = None
    dead: bool = False
    timers: list[threading.Timer] = field(default_factory=list)


def marked_pids(marker: str, instance_id: str | None = None) -> dict[int, str]:
    """{pid: instance id} of live processes carrying ``marker`` (one runner's), optionally one instance's."""
    found: dict[int, str] = {}
    needle = f"{marker}=".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state in (b"Z", b"X") or needle not in env:
            continue
        for item in env.split(b"\0"):
            if item.startswith(needle):
                iid = item[len(needle):].decode()
                if instance_id is None or iid == instance_id:
                    found[int(entry.name)] = iid
    return found


class InstanceRunner:
    """See the module docstring. ``start()`` the poller; ``stop()`` kills every instance."""

    def __init__(self, moto_url: str, proxy_url: str, workdir: Path, *, secret_key: str, ca_bundle: Path | str,
                 region: str = "us-east-1", python: str = sys.executable, poll_interval: float = 0.2,
                 errors: list | None = None, sessions: Callable[[str, str], Any] | None = None) -> None:
        self.moto_url, self.proxy_url, self.region = moto_url, proxy_url, region
        self.workdir = Path(workdir)
        self.secret_key, self.ca_bundle, self.python = secret_key, str(ca_bundle), python
        self.poll_interval = poll_interval
        self.sessions = sessions  # (role, instance id) → an STS session (.access_key, .secret_key, .token) moto issued
        self.errors = errors if errors is not None else []
        self.marker = MARKER_PREFIX + secrets.token_hex(6)  # this runner's processes, no other's
        self.profile_gap_closed: set[str] = set()  # instances given their reservation's profile (moto gap)
        self._instances: dict[str, _Instance] = {}
        self._first_seen: dict[str, float] = {}  # instance id → when a pass first listed it without a profile
        self.credentials: dict[str, str | None] = {}  # IMDS access key → role name (who made a call)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._generation = 0
        self._gen_cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- moto access -------------------------------------------------------------------------
    def _client(self, service: str) -> Any:
        cache = self._local.__dict__.setdefault("clients", {})
        if service not in cache:
            from botocore.config import Config

            cache[service] = direct_client(service, self.moto_url, self.secret_key, self.region,
                                           Config(retries={"total_max_attempts": 3}))
        return cache[service]

    def _describe(self) -> list[dict]:
        """Every instance not yet terminated (moto keeps terminated ones forever: listing them each poll made
        every pass slower as a session went on)."""
        out = []
        live = [{"Name": "instance-state-name", "Values": sorted(NOT_TERMINATED)}]
        for page in self._client("ec2").get_paginator("describe_instances").paginate(Filters=live):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
        return out

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "InstanceRunner":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="instance-runner", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - moto going away at teardown, or a harness bug
                if not self._stop.is_set():
                    self.errors.append(f"instance runner: {type(exc).__name__}: {exc}")
            with self._gen_cond:
                self._generation += 1
                self._gen_cond.notify_all()
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def poll_once(self) -> None:
        """One pass: boot newly running instances, kill those moto says are going or gone (or no longer lists)."""
        listed = self._describe()
        for inst in listed:
            iid, state = inst["InstanceId"], inst["State"]["Name"]
            with self._lock:
                known = self._instances.get(iid)
            if state == "running" and known is None and not self._stop.is_set() and self._settled(inst):
                self._boot(inst)
            elif state in DEAD_STATES and known is not None and not known.dead:
                self._kill(known)
        seen = {inst["InstanceId"] for inst in listed}
        with self._lock:
            gone = [inst for iid, inst in self._instances.items() if iid not in seen and not inst.dead]
        for inst in gone:  # terminated since the last pass
            self._kill(inst)

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Return once a full poll pass that began after this call has finished (runner caught up)."""
        with self._gen_cond:
            target = self._generation + 2
            self._wake.set()
            if not self._gen_cond.wait_for(lambda: self._generation >= target, timeout):
                raise AssertionError(f"instance runner did not catch up within {timeout} s")

    def stop(self) -> None:
        """Stop polling and kill every instance's processes and IMDS."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            self._kill(inst)
        for pid in self.marked_pids():  # anything of ours that escaped (should be none)
            _sigkill(pid)

    def marked_pids(self, instance_id: str | None = None) -> dict[int, str]:
        """{pid: instance id} of this runner's live instance processes."""
        return marked_pids(self.marker, instance_id)

    # -- booting -----------------------------------------------------------------------------
    def _settled(self, inst: dict) -> bool:
        """Whether moto has finished the RunInstances that made ``inst`` (see the module docstring)."""
        if self._reservation_profile(inst).get("Arn"):
            return True
        first = self._first_seen.setdefault(inst["InstanceId"], time.monotonic())
        return time.monotonic() - first >= PROFILE_SETTLE_S

    def _reservation_profile(self, inst: dict) -> dict:
        """The instance's profile, or (moto gap, see the module docstring) its reservation siblings' one."""
        profile = inst.get("IamInstanceProfile") or {}
        if profile.get("Arn"):
            return profile
        # moto filters a reservation's instances by InstanceIds and has no reservation-id filter: list them all
        pages = self._client("ec2").get_paginator("describe_instances").paginate()
        for page in pages:
            for reservation in page["Reservations"]:
                members = reservation["Instances"]
                if inst["InstanceId"] not in {i["InstanceId"] for i in members}:
                    continue
                arns = {(i.get("IamInstanceProfile") or {}).get("Arn") for i in members} - {None}
                if len(arns) == 1:
                    self.profile_gap_closed.add(inst["InstanceId"])
                    return {"Arn": arns.pop()}
        return {}

    def _identity(self, inst: dict, user_data: bytes) -> tuple[InstanceIdentity, bool]:
        role, profile_arn = None, None
        profile = self._reservation_profile(inst)
        if profile.get("Arn"):
            profile_arn = profile["Arn"]
            name = profile_arn.rsplit("/", 1)[-1]
            role = name
            try:
                roles = self._client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
                role = roles[0]["RoleName"] if roles else None
            except Exception:  # noqa: BLE001 - keep the profile name as the role name
                pass
        identity = InstanceIdentity(
            instance_id=inst["InstanceId"], instance_type=inst.get("InstanceType", "t3.micro"),
            region=self.region, availability_zone=(inst.get("Placement") or {}).get("AvailabilityZone", self.region + "a"),
            ami_id=inst.get("ImageId", ""), user_data=user_data, role=role, instance_profile_arn=profile_arn,
            lifecycle="spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand")
        tags_enabled = (inst.get("MetadataOptions") or {}).get("InstanceMetadataTags") == "enabled"
        return identity, tags_enabled

    def _tags(self, instance_id: str) -> dict[str, str]:
        resp = self._client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])
        return {t["Key"]: t["Value"] for t in resp["Tags"]}

    def _boot(self, inst: dict) -> None:
        iid = inst["InstanceId"]
        attr = self._client("ec2").describe_instance_attribute(InstanceId=iid, Attribute="userData")
        encoded = (attr.get("UserData") or {}).get("Value") or ""
        user_data = base64.b64decode(encoded) if encoded else b""
        identity, tags_enabled = self._identity(inst, user_data)
        session = self.sessions(identity.role, iid) if self.sessions and identity.role else None
        keys = {"secret_key": session.secret_key, "access_key": session.access_key,
                "session_token": session.token} if session else {"secret_key": self.secret_key}
        imds = Imds(identity, **keys, tags=(lambda: self._tags(iid)) if tags_enabled else None,
                    on_power_off=lambda: self._power_off(iid)).start()
        self.credentials[imds.access_key] = identity.role
        directory = self.workdir / iid
        (directory / "bin").mkdir(parents=True, exist_ok=True)
        record = _Instance(iid, directory, imds, user_data)
        with self._lock:
            self._instances[iid] = record
        for name in ("shutdown", "poweroff", "halt"):
            script = directory / "bin" / name
            script.write_text(POWER_SCRIPT.format(python=self.python, name=name,
                                                  url=imds.endpoint + "harness/power-off"))
            script.chmod(0o755)
        if not user_data.strip():
            return
        path = directory / "user-data"
        path.write_bytes(user_data)
        path.chmod(stat.S_IRWXU)
        argv = [str(path)] if user_data.startswith(b"#!") else ["bash", str(path)]
        env = {
            "PATH": f"{directory / 'bin'}:{SYSTEM_PATH}",
            "LANG": "C.UTF-8",
            "HOME": str(directory),
            "USER": "root",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
            "AWS_ENDPOINT_URL": self.proxy_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "SSL_CERT_FILE": self.ca_bundle,
            "MCC_PYTHON": self.python,
            self.marker: iid,
        }
        with open(directory / "console.log", "ab") as console:
            record.proc = subprocess.Popen(argv, cwd=directory, env=env, stdout=console, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)

    def _power_off(self, instance_id: str) -> None:
        """The OS halted: stop or terminate per InstanceInitiatedShutdownBehavior (moto's default: stop)."""
        ec2 = self._client("ec2")
        attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
        if attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate":
            ec2.terminate_instances(InstanceIds=[instance_id])
        else:
            ec2.stop_instances(InstanceIds=[instance_id])
        self._wake.set()

    # -- killing -----------------------------------------------------------------------------
    def _kill(self, inst: _Instance) -> None:
        with self._lock:
            if inst.dead:
                return
            inst.dead = True
        for timer in inst.timers:
            timer.cancel()
        if inst.proc is not None:
            try:
                os.killpg(inst.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self.marked_pids(inst.instance_id)
            if not pids:
                break
            for pid in pids:
                _sigkill(pid)
            time.sleep(0.02)
        if inst.proc is not None:
            try:
                inst.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.errors.append(f"instance runner: {inst.instance_id} pid {inst.proc.pid} survived SIGKILL")
        inst.imds.stop()

    # -- API for tests -----------------------------------------------------------------------
    def processes(self) -> dict[str, int]:
        """{instance id: pid} of instances with at least one live process (the user data's, else any)."""
        alive: dict[str, int] = {}
        marked = self.marked_pids()
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            if inst.proc is not None and inst.proc.poll() is None:
                alive[inst.instance_id] = inst.proc.pid
        for pid, iid in sorted(marked.items()):
            alive.setdefault(iid, pid)
        return alive

    def booted(self) -> list[str]:
        """Ids of every instance the runner has booted (alive or not)."""
        with self._lock:
            return list(self._instances)

    def _get(self, instance_id: str) -> _Instance:
        with self._lock:
            if instance_id not in self._instances:
                raise KeyError(f"instance {instance_id} was never booted by the runner")
            return self._instances[instance_id]

    def imds(self, instance_id: str) -> Imds:
        return self._get(instance_id).imds

    def instance_dir(self, instance_id: str) -> Path:
        return self._get(instance_id).directory

    def console(self, instance_id: str) -> str:
        """Everything the instance's user data has printed so far ("" before it boots)."""
        with self._lock:
            inst = self._instances.get(instance_id)
        try:
            return (inst.directory / "console.log").read_text(errors="replace") if inst else ""
        except FileNotFoundError:
            return ""

    def user_data(self, instance_id: str) -> str:
        return self._get(instance_id).user_data.decode("utf-8", "replace")

    def terminate(self, instance_id: str) -> None:
        """Terminate in moto and kill the instance's processes now."""
        self._client("ec2").terminate_instances(InstanceIds=[instance_id])
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is not None:
            self._kill(inst)

    def interrupt(self, instance_id: str, notice_seconds: float = 2.0) -> None:
        """Spot interruption: publish spot/instance-action now, terminate after ``notice_seconds``."""
        inst = self._get(instance_id)
        at = datetime.now(timezone.utc) + timedelta(seconds=notice_seconds)
        inst.imds.interrupt(at)

        def fire() -> None:
            try:
                self.terminate(instance_id)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"instance runner: interrupt {instance_id}: {type(exc).__name__}: {exc}")

        timer = threading.Timer(notice_seconds, fire)
        timer.daemon = True
        inst.timers.append(timer)
        timer.start()


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
