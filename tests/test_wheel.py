"""The wheel instances install: built once per source state, in the user's cache directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcc.driver import wheel
from tests.conftest import REPO


def test_source_digest_follows_the_files_that_go_into_the_wheel(tmp_path: Path) -> None:
    (tmp_path / "mcc" / "__pycache__").mkdir(parents=True)
    (tmp_path / "mcc" / "a.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = wheel.source_digest(tmp_path)
    (tmp_path / "mcc" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"compiled")
    (tmp_path / "notes.txt").write_text("not packaged")
    assert wheel.source_digest(tmp_path) == first
    (tmp_path / "mcc" / "a.py").write_text("x = 2\n")
    assert wheel.source_digest(tmp_path) != first


def test_pip_built_wheel_is_cached_by_source(tmp_path: Path) -> None:
    built = wheel._pip_wheel(REPO, tmp_path)
    stamp = built.stat().st_mtime_ns
    again = wheel._pip_wheel(REPO, tmp_path)
    assert again == built and again.stat().st_mtime_ns == stamp  # not rebuilt
    assert built.parent.name == f"src-{wheel.source_digest(REPO)}" and built.name.endswith(".whl")


def test_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert wheel.cache_dir() == tmp_path / "cache" / "mcc" / "wheels"
    built = wheel.build_wheel(wheel.cache_dir())  # pip-built or repacked, depending on how mcc is installed
    assert built.is_file() and built.name.endswith(".whl") and not list(built.parent.glob(".*"))
