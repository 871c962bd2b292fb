"""What a failed point's error text says, in one line: the message and the user's frame (file:line).

A point fails with a long text (a Python traceback, or a script's exit status and stderr). The queue,
the ledger, `mcc status` and the logs carry :func:`summarize`'s one line; the full text stays in the
bucket's ``failures/`` objects and is copied to ``results/RUN/logs/failures/`` when the run is collected.
Pure functions over text: the worker and the laptop both use them.
"""
from __future__ import annotations

import os
import re

FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)', re.M)
TRACEBACK_HEAD = "Traceback (most recent call last):"
LIMIT = 300  # characters of the exception's message kept in the one line


def user_frame(text: str, project_dir: str) -> str | None:
    """``entry.py:12 in compute``: the deepest traceback frame in the project (else the deepest one)."""
    frames = list(FRAME.finditer(text))
    if not frames:
        return None
    root = os.path.realpath(project_dir) + os.sep
    inside = [f for f in frames if os.path.realpath(f["file"]).startswith(root)]
    frame = (inside or frames)[-1]
    path = os.path.realpath(frame["file"])
    name = path[len(root):] if path.startswith(root) else frame["file"]
    return f"{name}:{frame['line']} in {frame['func']}"


def exception_line(text: str) -> str | None:
    """The ``ValueError: message`` line closing the last traceback in ``text`` (None without one)."""
    head = text.rfind(TRACEBACK_HEAD)
    if head < 0:
        return None
    lines = text[head:].splitlines()[1:]
    for k, line in enumerate(lines):  # the first unindented line after the frames
        if line and not line.startswith((" ", "\t")):
            return " ".join(x.strip() for x in lines[k:] if x.strip())[:LIMIT]
    return None


def summarize(detail: str, project_dir: str) -> str:
    """One line for a failed point: ``ValueError: cannot converge (entry.py:12 in compute)``.

    A script's ``exit status 1`` or a ``timed out after 600 s`` keeps its first line in front of the
    exception its stderr shows, if any.
    """
    text = detail.strip()
    exc = exception_line(text)
    first = text.splitlines()[0].strip() if text else "(no message)"
    if exc is None:
        return first[:LIMIT]
    where = user_frame(text, project_dir)
    line = exc if first.startswith(TRACEBACK_HEAD) else f"{first}: {exc}"
    return f"{line} ({where})" if where else line
