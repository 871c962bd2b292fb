"""A fake EC2 instance metadata service (IMDSv2 only) for one emulated instance.

Reached through the standard ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore and any IMDS client that
honours it). Every GET needs a token from ``PUT /latest/api/token``; role credentials carry the test
secret (moto accepts any key; under its IAM enforcement, an STS session moto issued: harness/enforce.py), so an instance gets credentials only from here, never from its env.
One path is the harness's own: ``POST /harness/power-off``, what the instance's fake ``shutdown`` calls.
"""
from __future__ import annotations

import functools
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InstanceIdentity:
    """What IMDS tells about the instance; ``role`` None means no instance profile (no credentials)."""

    instance_id: str
    instance_type: str = "t3.micro"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    ami_id: str = "ami-00000000"
    local_ipv4: str = "127.0.0.1"
    user_data: bytes = b""
    role: str | None = None
    instance_profile_arn: str | None = None
    account_id: str = "123456789012"
    lifecycle: str = "on-demand"  # or "spot"


class Imds:
    """Threaded HTTP server on a free loopback port; ``endpoint`` is the value for the env variable."""

    def __init__(self, identity: InstanceIdentity, *, secret_key: str, access_key: str | None = None,
                 session_token: str | None = None, tags: Callable[[], dict[str, str]] | None = None,
                 on_power_off: Callable[[], None] | None = None) -> None:
        self.identity = identity
        self.secret_key = secret_key
        self.access_key = access_key or "ASIA" + secrets.token_hex(8).upper()
        self.session_token = session_token or "IQoJ" + secrets.token_urlsafe(48)
        self.tags = tags  # None: InstanceMetadataTags disabled → tag paths 404, as on EC2
        self.on_power_off = on_power_off  # the harness's fake `shutdown` POSTs /harness/power-off
        self.instance_action: dict[str, str] | None = None
        self.requests: list[tuple[str, str]] = []
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "Imds":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"imds-{self.identity.instance_id}",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server, "IMDS not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def interrupt(self, at: datetime, action: str = "terminate") -> None:
        """Publish a spot interruption notice (spot/instance-action) for time ``at``."""
        self.instance_action = {"action": action, "time": _iso(at)}

    # -- token handling ----------------------------------------------------------------------
    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._tokens.get(token or "")
        return expiry is not None and expiry > time.monotonic()

    # -- content -----------------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        now = datetime.now(timezone.utc)
        return {"Code": "Success", "LastUpdated": _iso(now), "Type": "AWS-HMAC",
                "AccessKeyId": self.access_key, "SecretAccessKey": self.secret_key,
                "Token": self.session_token, "Expiration": _iso(now + timedelta(hours=6))}

    def lookup(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for a GET of ``path``."""
        ident = self.identity
        p = path.split("?", 1)[0]
        text = "text/plain"
        if p.rstrip("/") == "/latest/user-data":
            if not ident.user_data:
                return 404, text, "Not Found"
            return 200, "application/octet-stream", ident.user_data.decode("utf-8", "replace")
        if p.rstrip("/") == "/latest/dynamic/instance-identity/document":
            doc = {"accountId": ident.account_id, "architecture": "x86_64",
                   "availabilityZone": ident.availability_zone, "imageId": ident.ami_id,
                   "instanceId": ident.instance_id, "instanceType": ident.instance_type,
                   "privateIp": ident.local_ipv4, "region": ident.region, "version": "2017-09-30"}
            return 200, "application/json", json.dumps(doc, indent=2)
        prefix = "/latest/meta-data"
        if not p.startswith(prefix):
            return 404, text, "Not Found"
        key = p[len(prefix):].strip("/")
        leaves: dict[str, str] = {
            "instance-id": ident.instance_id, "instance-type": ident.instance_type, "ami-id": ident.ami_id,
            "local-ipv4": ident.local_ipv4, "hostname": "localhost", "local-hostname": "localhost",
            "instance-life-cycle": ident.lifecycle,
            "placement/region": ident.region, "placement/availability-zone": ident.availability_zone,
        }
        if key in leaves:
            return 200, text, leaves[key]
        if key == "":
            names = ["ami-id", "hostname", "instance-id", "instance-life-cycle", "instance-type",
                     "local-hostname", "local-ipv4", "placement/", "spot/"]
            if ident.role:
                names.append("iam/")
            if self.tags is not None:
                names.append("tags/")
            return 200, text, "\n".join(sorted(names))
        if key == "placement":
            return 200, text, "availability-zone\nregion"
        if key == "spot/instance-action":
            if self.instance_action is None:
                return 404, text, "Not Found"
            return 200, "application/json", json.dumps(self.instance_action)
        if key.startswith("iam") and ident.role:
            if key == "iam":
                return 200, text, "info\nsecurity-credentials/"
            if key == "iam/info":
                info = {"Code": "Success", "LastUpdated": _iso(datetime.now(timezone.utc)),
                        "InstanceProfileArn": ident.instance_profile_arn or "",
                        "InstanceProfileId": "AIPA" + ident.instance_id[2:].upper()}
                return 200, "application/json", json.dumps(info, indent=2)
            if key == "iam/security-credentials":
                return 200, text, ident.role
            if key == f"iam/security-credentials/{ident.role}":
                return 200, "application/json", json.dumps(self.credentials(), indent=2)
        if key.startswith("tags/instance") and self.tags is not None:
            tags = self.tags()
            if key == "tags/instance":
                return 200, text, "\n".join(sorted(tags))
            name = key[len("tags/instance/"):]
            if name in tags:
                return 200, text, tags[name]
        return 404, text, "Not Found"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"

    def __init__(self, imds: Imds, *args: Any, **kwargs: Any) -> None:
        self.imds = imds
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: str, ctype: str = "text/plain", extra: dict | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone: a `shutdown` killed with its instance before it read the answer

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def do_PUT(self) -> None:
        self._drain()
        self.imds.requests.append(("PUT", self.path))
        if self.path.split("?")[0] != "/latest/api/token":
            return self._send(404, "Not Found")
        if self.headers.get("X-Forwarded-For"):
            return self._send(403, "Forbidden")
        ttl_text = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        try:
            ttl = int(ttl_text or "")
        except ValueError:
            return self._send(400, "Bad Request")
        if not 1 <= ttl <= 21600:
            return self._send(400, "Bad Request")
        token = self.imds.new_token(ttl)
        self._send(200, token, extra={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})

    def do_GET(self) -> None:
        self._drain()
        self.imds.requests.append(("GET", self.path))
        if not self.imds.token_valid(self.headers.get("X-aws-ec2-metadata-token")):
            return self._send(401, "Unauthorized")
        status, ctype, body = self.imds.lookup(self.path)
        self._send(status, body, ctype)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._drain()
        if self.path == "/harness/power-off" and self.imds.on_power_off is not None:
            try:
                self.imds.on_power_off()
            except Exception as exc:  # noqa: BLE001 - the fake shutdown prints it and fails
                return self._send(500, f"power-off failed: {type(exc).__name__}: {exc}")
            return self._send(200, "powering off")
        self._send(405, "Method Not Allowed")

    def do_DELETE(self) -> None:
        self._drain()
        self._send(405, "Method Not Allowed")

    do_PATCH = do_DELETE
