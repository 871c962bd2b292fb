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
