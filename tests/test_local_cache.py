"""The local queue server with a working folder whose path has spaces, quotes and non-ASCII letters."""
from __future__ import annotations

import uuid
from pathlib import Path

import redis

from mcc.providers.base import TAG_LEDGER
from mcc.providers.local import processes
from mcc.providers.local.cache import config_quote, new_password, start_redis

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
