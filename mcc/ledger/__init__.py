"""The local SQLite ledger: every run, resource and subproblem with its lifecycle, and the events.

Open it with ``open_ledger()``; move entities only with ``fire`` / ``fire_bulk``; insert them only
with ``create_row`` / ``create_subproblems``; read with the helpers from ``queries``.
"""
from __future__ import annotations

from mcc.ledger import models
from mcc.ledger.db import Ledger, current_ledger, default_home, open_ledger
from mcc.ledger.machines import (
    STATES,
    TERMINAL_RUN_STATES,
    TRANSITIONS,
    create_point_subproblems,
    create_row,
    create_subproblems,
    fire,
    fire_bulk,
    legal_triggers,
    recount,
)
from mcc.ledger.models import Event, Meta, Resource, Run, Subproblem, SubproblemCount, new_run_id
from mcc.ledger.queries import (
    dead_subproblems,
    events,
    failed_subproblems,
    get_run,
    list_runs,
    resource_by_key,
    resource_dicts,
    resources,
    row_to_dict,
    run_transitions,
    subproblem_counts,
)

__all__ = [
    "open_ledger", "Ledger", "current_ledger", "default_home", "models",
    "Run", "Resource", "Subproblem", "Event", "Meta", "SubproblemCount", "new_run_id",
    "fire", "fire_bulk", "create_row", "create_subproblems", "create_point_subproblems", "recount",
    "STATES", "TRANSITIONS", "TERMINAL_RUN_STATES", "legal_triggers",
    "get_run", "list_runs", "resources", "events", "subproblem_counts", "resource_by_key",
    "failed_subproblems", "row_to_dict", "resource_dicts", "dead_subproblems", "run_transitions",
]
