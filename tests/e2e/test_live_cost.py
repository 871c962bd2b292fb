"""A real local run: the live view's callback gets the cost ($0, local) and run/status JSON carry it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mcc
from tests.conftest import mcc_json


def test_local_run_reports_cost_live_and_in_json(mcc_home: Path, make_project) -> None:
    project = make_project(30, toml="chunk_size = 3\nworkers = 2\n")
    seen: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
    result = mcc.run(project, home=mcc_home, on_progress=lambda run, progress, cost: seen.append((run.id, progress, cost)))
    assert result["state"] == "completed"
    assert seen and all(cost["local"] and cost["so_far_usd"] == 0.0 == cost["projected_usd"] for _, _, cost in seen)
    assert {run_id for run_id, _, _ in seen} == {result["run_id"]}
    assert result["cost"] == {"local": True, "so_far_usd": 0.0, "burn_usd_per_hour": 0.0, "projected_usd": 0.0,
                              "prepaid": [], "points_per_s": result["timings"]["points_per_second"], "remaining_points": 0, "complete": True, "finished": True}

    one = mcc_json("status", result["run_id"], home=mcc_home)
    assert one["cost"]["local"] and one["cost"]["projected_usd"] == 0.0
    listed = mcc_json("status", home=mcc_home)
    assert [r["cost"]["so_far_usd"] for r in listed] == [0.0]
    assert mcc_json("clean", "--all", "--yes", home=mcc_home)["survivors"] == []
