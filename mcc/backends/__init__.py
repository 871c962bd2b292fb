"""Backends: which resources a run needs and how its manager is started, over one provider set each."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mcc.errors import ConfigError
from mcc.ledger import models


class Backend(Protocol):
    name: str
    providers: dict[str, Any]

    def provision(self, engine: Any, run: models.Run) -> dict[str, str]:
        """Create (or find) the run's bucket and queue; return {"store_url", "redis_url"}."""
        ...

    def launch_manager(self, engine: Any, run: models.Run, urls: dict[str, str]) -> models.Resource: ...

    def teardown(self, engine: Any, run: models.Run) -> None:
        """Stop the run's compute and queue (not its bucket)."""
        ...


def get_backend(name: str, home: Path, ledger_uuid: str) -> Backend:
    if name == "local":
        from mcc.backends.local import LocalBackend

        return LocalBackend(home, ledger_uuid)
    raise ConfigError(f"backend {name!r} is not available in this mcc; use backend = \"local\" in mcc.toml or --backend local")
