"""The local backend: bucket = directory, queue = embedded redis-server, instances = processes."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mcc.driver.engine import Engine
from mcc.ledger import models
from mcc.providers.local.bucket import DirectoryProvider
from mcc.providers.local.cache import RedisServerProvider, new_password
from mcc.providers.local.instance import ProcessProvider
from mcc.work.stores import LocalStore


class LocalBackend:
    name = "local"
    region = None
    poll_seconds = (0.05, 0.5)  # follow closely at first, then back off: short runs end fast
    tick_seconds = 0.1
    manager_boot_seconds = 60.0     # a manager process that has published nothing by then is replaced
    manager_silence_seconds = 30.0  # ... and one that stopped publishing for this long

    def __init__(self, home: Path, ledger_uuid: str) -> None:
        self.home, self.ledger_uuid = home, ledger_uuid
        self.providers = {"directory": DirectoryProvider(home), "cache": RedisServerProvider(), "instance": ProcessProvider()}

    def provision(self, engine: Engine, run: models.Run) -> dict[str, str]:
        bucket = engine.ensure(run.id, "directory", run.id, f"{run.id}/bucket", {})
        root = Path(bucket.physical_id)
        cache = engine.current(run, "cache", f"{run.id}/queue", {
            "password": new_password(), "workdir": str(root / "redis"), "log": str(root / "logs" / "redis.log"),
        })
        url = f"redis://:{cache.spec['password']}@{cache.attrs['host']}:{cache.attrs['port']}/0"
        return {"store_url": LocalStore(root).url, "redis_url": url, "extra": {}, "tick_seconds": self.tick_seconds}

    def preflight(self) -> None:
        """What can fail before anything is created: a usable redis-server."""
        from mcc.providers.local.cache import find_redis_server

        find_redis_server()

    def store(self, url: str) -> LocalStore:
        return LocalStore(Path(url[len("file://"):]))

    def launch_manager(self, engine: Engine, run: models.Run, urls: dict[str, Any]) -> models.Resource:
        root = Path(urls["store_url"][len("file://"):])
        n = models.Resource.select().where((models.Resource.run == run.id) & (models.Resource.name == "manager")).count()
        return engine.current(run, "instance", f"{run.id}/manager", {
            "argv": [sys.executable, "-m", "mcc.remote.manager"],
            "env": {"MCC_STORE": urls["store_url"], "MCC_REDIS_URL": urls["redis_url"], "MCC_RUN_ID": run.id,
                    "MCC_WORKDIR": str(root / "work" / f"manager-{n + 1}")},
            "cwd": run.project_dir,
            "log": str(root / "logs" / f"manager-{n + 1}.log"),
        }, name="manager")

    def teardown(self, engine: Engine, run: models.Run) -> None:
        rows = models.Resource.select().where(
            (models.Resource.run == run.id) & models.Resource.kind.in_(["instance", "cache"])
            & models.Resource.state.not_in(["deleted"])
        )
        engine.destroy_all(list(rows), "run finished")
        # Workers are started by the manager, not by us: find them by their tags.
        for row in engine.sweep(run.id):
            if row.kind in ("instance", "cache"):
                engine.destroy(row, "run finished")

