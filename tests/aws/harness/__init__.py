"""An emulated EC2 cloud for tests: moto behind a fault proxy, fake instances, IMDS and ElastiCache.

Modules: ``moto_server`` (the moto process), ``proxy`` (fault injection, call counting, response
rewriting), ``elasticache`` (real TLS redis-servers behind moto's ElastiCache), ``imds`` (per-instance
metadata service), ``runner`` (runs each instance's user data as a local process group), ``tls``
(throwaway CA). The ``cloud`` fixture in ``tests/aws/conftest.py`` wires them together.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; raise AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_SESSION_LOCK = threading.Lock()
_SESSION: Any = None


def direct_client(service: str, endpoint_url: str, secret_key: str, region: str = "us-east-1",
                  config: Any = None) -> Any:
    """A boto3 client for ``endpoint_url`` with explicit test keys, from one shared session.

    Sharing the session shares botocore's loaded service models: a fresh session per client costs
    ~0.5 s per service. The env (AWS_ENDPOINT_URL…) cannot redirect it: endpoint and keys are explicit.
    """
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            import boto3

            _SESSION = boto3.session.Session()
        return _SESSION.client(service, endpoint_url=endpoint_url, region_name=region,
                               aws_access_key_id="testing", aws_secret_access_key=secret_key, config=config)


class HarnessErrors(list):
    """Exceptions raised inside harness threads (proxy hooks, runner loop); the fixture fails on any."""

    def record(self, where: str, exc: BaseException) -> None:
        self.append(f"{where}: {type(exc).__name__}: {exc}")


@dataclass
class Cloud:
    """What the ``cloud`` fixture yields: endpoints, the harness parts and direct moto clients."""

    url: str  # the fault proxy: what AWS_ENDPOINT_URL points at
    moto_url: str  # moto itself, bypassing faults and counts (under IAM enforcement: its admin front)
    proxy: Any
    runner: Any
    elasticache: Any
    secret_key: str
    region: str
    ca_file: str  # the harness CA alone (SSL_CERT_FILE is a bundle that includes it)
    errors: HarnessErrors = field(default_factory=HarnessErrors)
    bucket_policies: dict[str, Any] = field(default_factory=dict)  # as sent (moto stores them stripped: gaps.py)
    authz: Any = None  # the policy evaluator on every call (harness/authz.py)
    enforcement: Any = None  # moto's own IAM enforcement, when on (harness/enforce.py)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client DIRECT to moto (no faults, not counted), for assertions and setup; ``region``
        defaults to the harness's."""
        region = region or self.region
        if (service, region) not in self._clients:
            self._clients[(service, region)] = direct_client(service, self.moto_url, self.secret_key, region)
        return self._clients[(service, region)]
