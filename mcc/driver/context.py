"""A ledger bound to a backend and an engine: what every driving step of a run works with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcc.backends import Backend, get_backend
from mcc.driver.engine import Engine
from mcc.ledger import Ledger, models
from mcc.work.stores import Store


@dataclass
class Context:
    ledger: Ledger
    backend: Backend
    engine: Engine

    @classmethod
    def open(cls, ledger: Ledger, backend_name: str, aws: dict[str, Any] | None = None,
             ledger_uuid: str | None = None) -> "Context":
        """``ledger_uuid`` (default: the ledger's own) is the tag the backend and engine own resources by:
        another one sweeps what a lost ledger created (whose creation time is unknown: no ``not_before``)."""
        owner = ledger_uuid or ledger.uuid
        backend = get_backend(backend_name, ledger.home, owner, aws)
        not_before = ledger.created_at if owner == ledger.uuid else None
        return cls(ledger, backend, Engine(owner, backend.name, backend.providers, region=backend.region,
                                           not_before=not_before))

    @classmethod
    def for_run(cls, ledger: Ledger, run: models.Run) -> "Context":
        return cls.open(ledger, run.backend, (run.settings or {}).get("slurm" if run.backend == "slurm" else "aws"))


def inputs_path(ledger: Ledger, run_id: str) -> Path:
    return ledger.home / "inputs" / f"{run_id}.npy"


def store_of(ctx: Context, run: models.Run) -> Store | None:
    """The run's bucket, once provisioning recorded its URL."""
    url = (run.spec or {}).get("store_url")
    return ctx.backend.store(url) if url else None
