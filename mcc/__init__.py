"""mcc — run a sweep of independent subproblems on many machines; get one HDF5 file back.

The public API: ``run``, ``resume``, ``status``, ``clean``, ``open_ledger``; and the original mCC's
modules ``templates``, ``storage``, ``launch``, ``clean``, ``config``, ``analysis``, ``statistics``,
``logger`` with ``get_aws_settings`` and ``launch_master_node``. Imported lazily so that worker processes
importing ``mcc.work.queue`` pay only for what they use. ``mcc.clean`` is a module that is also callable:
``mcc.clean(run_id)`` / ``mcc.clean(all=True)`` is :func:`mcc.api.clean`.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["run", "estimate", "resume", "status", "clean", "open_ledger", "MccError", "__version__",
           "get_aws_settings", "launch_master_node"]

_LAZY = {
    "run": "mcc.api",
    "estimate": "mcc.api",
    "resume": "mcc.api",
    "status": "mcc.api",
    "open_ledger": "mcc.ledger",
    "MccError": "mcc.errors",
    "get_aws_settings": "mcc.config",
    "launch_master_node": "mcc.launch",
}
# The original mCC's module names (``mcc.clean`` is callable: mcc.api.clean).
_MODULES = ("templates", "storage", "launch", "clean", "config", "analysis", "statistics", "logger")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"mcc.{name}")
    raise AttributeError(f"module 'mcc' has no attribute {name!r}")
