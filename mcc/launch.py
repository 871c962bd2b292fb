"""The original mCC's ``mcc.launch``: upload the project's files, then start the managing instance.

``launch_master_node`` starts a run exactly as ``mcc run --backend aws`` does (same supervisor, same
manager, same cleanup guarantee), from the parts the setup calls made: the run's objects go into the
bucket, its instances boot the launch template's image in its security group, and the Redis server is
its queue. It returns once the manager runs; the handle's ``run_id`` works with ``mcc status``,
``mcc resume`` and ``mcc.resume()``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcc.driver.setup import Setup, setup_group
from mcc.errors import MccError
from mcc.storage import bucket_store

__all__ = ["upload_user_endpoint", "upload_user_entrypoint", "upload_req_files", "launch_master_node", "MasterNode"]

SCRIPT = "script"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def upload_user_endpoint(s3_bucket_name: str, location: str = SCRIPT) -> list[str]:
    """Upload every file of the project's ``script`` folder to ``script/`` in the bucket; returns the keys."""
    setup = setup_group()
    folder = setup.project_dir / location
    files = _files(folder) if folder.is_dir() else []
    if not files:
        raise MccError(f"upload_user_endpoint: {folder} {'has no files' if folder.is_dir() else 'does not exist'}. "
                       f"Put your entry script there (run as `python {location}/my_script.py OUTFILE x y z ...`).")
    store = bucket_store(setup, s3_bucket_name)
    keys = []
    for path in files:
        key = f"{SCRIPT}/{path.relative_to(folder).as_posix()}"
        store.put_file(key, path)
        keys.append(key)
    return keys


upload_user_entrypoint = upload_user_endpoint  # the name the original's launch.py used


def upload_req_files(s3_bucket_name: str, combine_data: str = "combine_data.py", points: str = "points.py") -> list[str]:
    """Upload ``points.py``, ``combine_data.py`` (optional: without it the built-in combiner is used) and, when
    present, ``mcc.toml`` and ``requirements.txt``; returns the keys.

    The original also uploaded its worker user data: mcc renders that per run from remote/bootstrap.py (no
    credentials in it), so there is no template file to upload.
    """
    setup = setup_group()
    store = bucket_store(setup, s3_bucket_name)
    keys = []
    for name, required in ((points, True), (combine_data, False), ("mcc.toml", False), ("requirements.txt", False)):
        path = setup.project_dir / name
        if not path.is_file():
            if required:
                raise MccError(f"upload_req_files: {path} does not exist. It defines get_points() returning the "
                               "list of points.")
            continue
        store.put_file(name, path)
        keys.append(name)
    return keys


@dataclass
class MasterNode:
    """A started run: ``run_id`` for mcc status/resume; ``summary`` as the run was when the manager started."""

    run_id: str
    summary: dict[str, Any] = field(repr=False)

    def status(self) -> dict[str, Any]:
        from mcc.api import status

        return status(self.run_id)  # type: ignore[return-value]

    def wait(self) -> dict[str, Any]:
        """Follow the run to its end (collects combined.h5, tears down its compute); the summary."""
        from mcc.api import resume

        return resume(self.run_id)

    def __getitem__(self, key: str) -> Any:  # the original returned a dict
        return {"run_id": self.run_id, **self.summary}[key]


def _uploaded(setup: Setup, bucket: str, files: dict[str, Path]) -> None:
    """The run computes what was uploaded: each file must be in the bucket, as it is in the folder."""
    store = bucket_store(setup, bucket)
    for key, path in files.items():
        data = store.get_bytes(key)
        fix = "mcc.launch.upload_user_endpoint" if key.startswith(f"{SCRIPT}/") else "mcc.launch.upload_req_files"
        if data is None:
            raise MccError(f"launch_master_node: bucket {bucket} has no {key}. Upload it first with {fix}({bucket!r}).")
        if not path.is_file() or data != path.read_bytes():
            raise MccError(f"launch_master_node: {key} in bucket {bucket} differs from {path}. Upload it again with "
                           f"{fix}({bucket!r}).")


def launch_master_node(*, master_template_id: str, s3_bucket_name: str, entry_point_script: str,
                       worker_instance_type: str | None = None, hyperthreading: bool | None = None,
                       redis_endpoint: str | None = None, redis_port: int | None = None,
                       instance_type: str | None = None, workers: int | None = None,
                       **unknown: Any) -> MasterNode:
    """Start the run of this folder on AWS; returns once its manager instance runs.

    ``master_template_id`` (mcc.templates.create_launch_template) gives the image, security group and key;
    ``s3_bucket_name`` (mcc.storage.create_s3_bucket) holds the run under ``runs/<run id>/`` and must hold
    the uploaded ``script/<entry_point_script>`` and ``points.py``; ``redis_endpoint`` (the host
    mcc.templates.create_redis_server returned) makes that server the queue (else the manager runs one).
    ``instance_type`` is the manager's type, ``workers`` the number of worker instances (default: mcc.toml).
    ``hyperthreading=False`` launches every worker instance with SMT off (one thread per physical core; a type
    that does not allow it is refused before anything starts); default: mcc.toml's ``[aws] hyperthreading``, on.
    """
    if unknown:
        accepted = ", ".join(p for p in inspect.signature(launch_master_node).parameters if p != "unknown")
        raise MccError(f"launch_master_node: unknown argument(s) {', '.join(sorted(unknown))}; it accepts {accepted}")
    if hyperthreading is not None and not isinstance(hyperthreading, bool):
        raise MccError(f"launch_master_node: hyperthreading must be True or False, got {hyperthreading!r}")
    setup = setup_group()
    template = setup.member("launch_template", master_template_id)
    setup.member("bucket", s3_bucket_name)
    entry = f"{SCRIPT}/{entry_point_script}"
    _uploaded(setup, s3_bucket_name, {entry: setup.project_dir / entry,
                                      "points.py": setup.project_dir / "points.py"})
    cache_id = None
    if redis_endpoint is not None:
        caches = [r for r in setup.members("cache") if r.attrs.get("host") == redis_endpoint
                  and (redis_port is None or int(r.attrs.get("port", 0)) == int(redis_port))]
        if not caches:
            raise MccError(f"launch_master_node: no Redis server of this setup group has the endpoint "
                           f"{redis_endpoint}:{redis_port or 6379}; pass what mcc.templates.create_redis_server returned")
        cache_id = caches[-1].physical_id
    spec = template.spec
    aws = {"region": setup.region, "bucket": s3_bucket_name, "image_id": spec["image_id"],
           "security_group_id": spec["security_group_id"], "key_name": spec.get("key_name"),
           "cache_id": cache_id, "worker_type": worker_instance_type, "manager_type": instance_type,
           "hyperthreading": hyperthreading}
    from mcc.api import run

    summary = run(setup.project_dir, backend="aws", entry=entry, workers=workers, aws=aws, detach=True,
                  home=setup.ledger.home)
    return MasterNode(summary["run_id"], summary)
