"""The local "instance": a detached process in its own process group, identified by pid + start time."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec
from mcc.providers.local import processes

TAG_KIND = "mcc:kind"


class ProcessProvider:
    """kind ``instance``; ``spec.params``: argv, env, cwd, log (path). Physical id ``pid@start``."""

    kind = "instance"

    def create(self, spec: ResourceSpec) -> Found:
        params = spec.params
        log = Path(params["log"]) if params.get("log") else None
        if log:
            log.parent.mkdir(parents=True, exist_ok=True)
        proc = processes.spawn(
            list(params["argv"]),
            tags={**spec.tags, TAG_KIND: self.kind},
            env=params.get("env"),
            cwd=params.get("cwd"),
            log_path=log,
        )
        return _found(proc, spec.tags)

    def find(self, spec: ResourceSpec) -> Found | None:
        # this ledger's only: another ledger's run may use the same key (find-before-create must not adopt it)
        procs = processes.find_tagged({TAG_LEDGER: spec.tags[TAG_LEDGER], TAG_ENTITY: spec.tags[TAG_ENTITY],
                                       TAG_KIND: self.kind})
        return _found(procs[0], spec.tags) if procs else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        proc = processes.ProcessId.parse(physical_id)
        return _found(proc, {}) if processes.is_alive(proc) else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        processes.terminate(processes.ProcessId.parse(physical_id), grace=float(attrs.get("grace", 15.0)))

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        return sweep_processes(self.kind, ledger_uuid, run_id)


def sweep_processes(kind: str, ledger_uuid: str, run_id: str | None) -> list[Found]:
    """Live processes of ``kind`` tagged with this ledger (and run), found through their environment."""
    match = {TAG_LEDGER: ledger_uuid, TAG_KIND: kind}
    if run_id:
        match[TAG_RUN] = run_id
    return [_found(p, processes.tags_of(p)) for p in processes.find_tagged(match)]


def _found(proc: processes.ProcessId, tags: dict[str, str]) -> Found:
    return Found(str(proc), {"pid": proc.pid, "start": proc.start}, dict(tags))
