"""The local bucket: atomic puts, listing, moves, and keys that cannot escape the directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcc.work.stores import LocalStore, get_json, open_store, put_json


def test_put_get_list_delete(tmp_path: Path) -> None:
    store = open_store((tmp_path / "b").resolve().as_uri())
    store.put_bytes("results/0000001.h5", b"one")
    put_json(store, "spec.json", {"a": 1})
    assert store.get_bytes("results/0000001.h5") == b"one"
    assert get_json(store, "spec.json") == {"a": 1} and get_json(store, "missing.json") is None
    assert store.list("results/") == ["results/0000001.h5"]
    assert not list((tmp_path / "b").rglob(".tmp-*"))
    store.delete("results/0000001.h5")
    store.delete("results/0000001.h5")  # deleting a missing key is fine
    assert store.list("results/") == []


def test_put_file_move_and_get_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "b")
    src = tmp_path / "part"
    src.write_bytes(b"rows")
    store.put_file("results/x.h5", src, move=True)
    assert not src.exists() and store.exists("results/x.h5")
    dest = tmp_path / "out" / "x.h5"
    assert store.get_file("results/x.h5", dest) and dest.read_bytes() == b"rows"
    assert not store.get_file("results/none.h5", tmp_path / "none")


def test_keys_cannot_escape(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "b")
    with pytest.raises(ValueError):
        store.put_bytes("../outside", b"x")
    with pytest.raises(ValueError):
        open_store("ftp://example/bucket")


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    """mcc.work.atomic serves the bucket and the price cache: a failed write leaves the old file and no temp."""
    from mcc.work import atomic

    dest = tmp_path / "sub" / "prices.json"
    atomic.write_bytes(dest, b"old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["prices.json"]
    src = tmp_path / "src"
    src.write_bytes(b"new")
    atomic.copy_file(src, dest)
    assert dest.read_bytes() == b"new"
    atomic.unlink_quietly(dest)
    atomic.unlink_quietly(dest)  # already gone is fine
    assert not dest.exists()
