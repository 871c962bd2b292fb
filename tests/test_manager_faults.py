"""The manager's side of issue 12 §4: a user's combine_data error as theirs, a gone lock holder spotted at once."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
from pathlib import Path

from mcc.providers.local import processes
from mcc.remote.manager import _holder_gone, user_error


def test_combine_data_error_names_the_users_file_line_and_message(tmp_path: Path) -> None:
    (tmp_path / "combine_data.py").write_text("def combine_data(files, fileout):\n    raise ValueError('boom')\n")
    spec = importlib.util.spec_from_file_location("combine_data", tmp_path / "combine_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.combine_data([], "out.h5")
    except ValueError as exc:
        text = user_error(exc, tmp_path, "r-1")
    assert f"{tmp_path / 'combine_data.py'}, line 2, in combine_data: ValueError: boom" in text
    assert "Traceback" not in text and "mcc logs r-1 --worker manager" in text


def test_a_lock_holder_that_is_gone_is_spotted_at_once() -> None:
    here = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "60"])
    proc = processes.identify(sleeper.pid)
    value = json.dumps({"id": "manager-x", "host": here, "process": str(proc)})
    assert not _holder_gone(value)
    sleeper.kill()
    sleeper.wait(timeout=30)
    assert _holder_gone(value)
    assert not _holder_gone(json.dumps({"id": "m", "host": here + "-other", "process": str(proc)}))
    assert not _holder_gone("manager-123-456")  # an older manager's plain id: waited out by its expiry
    me = json.dumps({"id": "m", "host": here, "process": str(processes.identify(os.getpid()))})
    assert not _holder_gone(me)
