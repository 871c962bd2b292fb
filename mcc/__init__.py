"""mcc — run a sweep of independent subproblems on many machines; get one HDF5 file back.

The public API: ``run``, ``resume``, ``status``, ``clean``, ``open_ledger``. Imported lazily so
that worker processes importing ``mcc.work.queue`` pay only for what they use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["run", "resume", "status", "clean", "open_ledger", "MccError", "__version__"]

_LAZY = {
    "run": "mcc.api",
    "resume": "mcc.api",
    "status": "mcc.api",
    "clean": "mcc.api",
    "open_ledger": "mcc.ledger",
    "MccError": "mcc.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mcc' has no attribute {name!r}")
