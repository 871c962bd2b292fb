"""S3Store against a real moto_server."""
from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from mcc.work.stores import S3Store, get_json, open_store, put_json
from tests.aws._moto import aws_env, moto_endpoint  # noqa: F401 - fixtures


@pytest.fixture
def store(aws_env: str) -> S3Store:
    bucket = f"mcc-store-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/runs/r1/")  # type: ignore[return-value]


def test_put_get_exists_delete(store: S3Store) -> None:
    assert store.url.endswith("/runs/r1/") and store.get_bytes("a/b.bin") is None and not store.exists("a/b.bin")
    store.put_bytes("a/b.bin", b"\x00data")
    assert store.get_bytes("a/b.bin") == b"\x00data" and store.exists("a/b.bin")
    assert store.local_path("a/b.bin") is None
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # deleting a missing key is fine
    assert not store.exists("a/b.bin")


def test_list_is_relative_to_the_prefix(store: S3Store) -> None:
    for key in ("results/2.h5", "results/1.h5", "logs/w.log"):
        store.put_bytes(key, b"x")
    boto3.client("s3").put_object(Bucket=store.bucket, Key="runs/r2/results/9.h5", Body=b"other run")
    assert store.list("results/") == ["results/1.h5", "results/2.h5"]
    assert store.list("") == ["logs/w.log", "results/1.h5", "results/2.h5"]
    assert store.list("nothing/") == []


def test_files_and_json(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    store.put_file("f/src.bin", src, move=True)
    assert not src.exists()
    dest = tmp_path / "out" / "dest.bin"
    assert store.get_file("f/src.bin", dest) and dest.read_bytes() == b"payload" * 1000
    assert not store.get_file("f/missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()
    put_json(store, "progress.json", {"done": 3})
    assert get_json(store, "progress.json") == {"done": 3}


def test_keys_cannot_escape(store: S3Store) -> None:
    with pytest.raises(ValueError):
        store.put_bytes("../r2/x", b"")
