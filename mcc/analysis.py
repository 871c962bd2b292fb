"""The original mCC's ``mcc.analysis``: costs and times of runs, from the ledger and the runs' logs.

A façade over mcc/report/analysis.py (what ``mcc analyze`` prints)."""
from __future__ import annotations

from mcc.report.analysis import analyze_by_type, analyze_run, worker_timeline

__all__ = ["analyze_run", "analyze_by_type", "worker_timeline"]
