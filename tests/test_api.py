"""mcc.api's pure summaries over ledger rows."""
from __future__ import annotations

from pathlib import Path

from mcc import api
from mcc.ledger import models, open_ledger


def test_timings_add_up_the_rounds_of_retry_dead_not_the_pause_between(mcc_home: Path) -> None:
    open_ledger(mcc_home)
    steps = [("create", 0), ("start", 1), ("combine", 11), ("collect", 12), ("complete_with_failures", 13),
             ("retry_dead", 1000), ("start", 1001), ("combine", 1005), ("collect", 1006), ("complete", 1007)]
    models.Event.insert_many([{"at": at, "entity": "run", "entity_id": "r-x", "run_id": None, "trigger": trigger,
                               "source": None, "dest": "-", "actor": "local"} for trigger, at in steps]).execute()
    t = api.timings("r-x", 140)
    assert (t["startup_s"], t["compute_s"], t["combine_s"], t["total_s"]) == (1, 14, 1, 20)
    assert t["points_per_second"] == 10.0
