"""Backends: which resources a run needs and how its manager is started, over one provider set each."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mcc.errors import ConfigError
from mcc.ledger import models


class Backend(Protocol):
    name: str
    region: str | None
    providers: dict[str, Any]
    poll_seconds: tuple[float, float]
    tick_seconds: float
    manager_boot_seconds: float      # a manager that has published nothing by then is replaced
    manager_silence_seconds: float   # ... and one that stopped publishing for this long

    def provision(self, engine: Any, run: models.Run) -> dict[str, Any]:
        """Create (or find) the run's bucket, queue and the rest; return {"store_url", "extra", …}."""
        ...

    def preflight(self) -> None:
        """Raise a clear error for what would fail later (credentials, binaries) before anything exists."""
        ...

    def store(self, url: str) -> Any:
        """The Store behind a bucket URL of this backend."""
        ...

    def launch_manager(self, engine: Any, run: models.Run, urls: dict[str, Any]) -> models.Resource: ...

    def teardown(self, engine: Any, run: models.Run) -> None:
        """Stop the run's compute and queue (not its bucket)."""
        ...


def get_backend(name: str, home: Path, ledger_uuid: str, aws: dict[str, Any] | None = None) -> Backend:
    """The backend ``name``; ``aws`` is its settings table ([aws], or [slurm] for slurm; validated here)."""
    if name == "local":
        from mcc.backends.local import LocalBackend

        return LocalBackend(home, ledger_uuid)
    if name == "aws":
        from mcc.backends.aws import make_aws_backend

        return make_aws_backend(home, ledger_uuid, aws)
    if name == "slurm":
        from mcc.backends.slurm import make_slurm_backend

        return make_slurm_backend(home, ledger_uuid, aws)
    raise ConfigError(f"backend {name!r} is not available in this mcc; use backend = \"local\" in mcc.toml or --backend local")
