"""The original mCC's ``mcc.logger``: the ``mcc`` logger, and a run's logs merged in time order.

A façade over mcc/report/logs.py (what ``mcc logs`` prints)."""
from __future__ import annotations

import logging

from mcc.report.logs import merged_lines, run_logs

__all__ = ["logger", "run_logs", "merged_lines"]

logger = logging.getLogger("mcc")
