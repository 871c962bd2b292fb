"""The run's bucket as seen by the library and by remote/: keys → bytes, with atomic puts.

``file:///abs/dir`` is the local backend's bucket (a directory). The AWS backend adds ``s3://``.
Every put is atomic (temporary name, then rename), so a reader never sees half an object.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from mcc.work import atomic

STREAM_MAX_BYTES = 64 * 2**20  # S3Store.get_file: objects up to this size in one streamed GET


class Store(Protocol):
    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def put_file(self, key: str, path: Path, *, move: bool = False) -> None: ...
    def get_file(self, key: str, dest: Path) -> bool: ...
    def local_path(self, key: str) -> Path | None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    """A directory used as a bucket."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._resolved = self.root.resolve()  # once: a worker writes one result per subproblem through _path
        self.url = self._resolved.as_uri()

    def _path(self, key: str) -> Path:
        path = (self._resolved / key).resolve()
        if self._resolved not in path.parents:
            raise ValueError(f"key {key!r} escapes the bucket")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic.write_bytes(self._path(key), data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(path, dest)
                return
            except OSError:  # another filesystem: fall back to copy
                pass
        atomic.copy_file(path, dest)
        if move:
            atomic.unlink_quietly(path)

    def get_file(self, key: str, dest: Path) -> bool:
        src = self._path(key)
        if not src.exists():
            return False
        atomic.copy_file(src, dest)
        return True

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        root = self.root.resolve()
        keys = [
            str(p.relative_to(root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(keys)

    def delete(self, key: str) -> None:
        atomic.unlink_quietly(self._path(key))


class S3Store:
    """An S3 bucket prefix used as a bucket (``s3://bucket/prefix/``). A put is one PUT: atomic by nature.

    ``client`` is an S3 client (boto3's default chain when omitted: an instance uses its role). Every call
    goes through the AWS retry helper, so throttling is retried and errors arrive typed."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        from mcc.providers.aws.errors import AwsNotFound, call  # botocore only where an S3 store is used

        if client is None:
            import boto3

            client = boto3.client("s3")
        self.bucket, self.s3, self._call, self._missing = bucket, client, call, AwsNotFound
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key {key!r} escapes the bucket")
        return self.prefix + key

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(self.s3.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._call(self.s3.get_object, Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self._missing:
            return None

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        self._call(self.s3.upload_file, str(path), self.bucket, self._key(key))
        if move:
            atomic.unlink_quietly(path)

    def get_file(self, key: str, dest: Path) -> bool:
        """Download to a temporary name beside ``dest``, then rename; False when the key does not exist.

        One GET streamed to the file (a manager fetches one small batch object per acked batch); an object
        past ``STREAM_MAX_BYTES`` goes through boto3's parallel ranged download instead."""
        try:
            with atomic.replacing(dest) as tmp:
                reply = self._call(self.s3.get_object, Bucket=self.bucket, Key=self._key(key))
                body = reply["Body"]
                try:
                    if reply.get("ContentLength", 0) > STREAM_MAX_BYTES:
                        body.close()
                        self._call(self.s3.download_file, self.bucket, self._key(key), str(tmp))
                    else:
                        with open(tmp, "wb") as fh:
                            shutil.copyfileobj(body, fh, 1 << 20)
                finally:
                    body.close()
        except self._missing:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self._call(self.s3.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except self._missing:
            return False

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, relative to the store's prefix, sorted."""
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)))
        return sorted(o["Key"][len(self.prefix):] for page in pages for o in page.get("Contents", []))

    def delete(self, key: str) -> None:
        self._call(self.s3.delete_object, Bucket=self.bucket, Key=self._key(key))


def open_store(url: str, *, client: Any = None) -> Store:
    """The store behind a bucket URL: ``file:///abs/dir`` or ``s3://bucket/prefix/``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3Store(parsed.netloc, parsed.path.lstrip("/"), client=client)
    raise ValueError(f"unsupported bucket URL {url!r} (this mcc knows file:// and s3://)")


def put_json(store: Store, key: str, value: Any) -> None:
    store.put_bytes(key, json.dumps(value, sort_keys=True, default=str).encode())


def get_json(store: Store, key: str) -> Any | None:
    data = store.get_bytes(key)
    return None if data is None else json.loads(data)
