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
    create_row,
    create_subproblems,
    fire,
    fire_bulk,
    legal_triggers,
)
from mcc.ledger.models import Event, Meta, Resource, Run, Subproblem, new_run_id
from mcc.ledger.queries import (
    events,
    failed_subproblems,
    get_run,
    list_runs,
    resource_by_key,
    resources,
    row_to_dict,
    subproblem_counts,
)

__all__ = [
    "open_ledger", "Ledger", "current_ledger", "default_home", "models",
    "Run", "Resource", "Subproblem", "Event", "Meta", "new_run_id",
    "fire", "fire_bulk", "create_row", "create_subproblems",
    "STATES", "TRANSITIONS", "TERMINAL_RUN_STATES", "legal_triggers",
    "get_run", "list_runs", "resources", "events", "subproblem_counts", "resource_by_key",
    "failed_subproblems", "row_to_dict",
]
