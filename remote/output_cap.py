"""A cap on what a worker's computation prints, so a chatty entry cannot fill the disk with logs.

The worker's stdout and stderr (file descriptors 1 and 2, so C code and child processes are capped too)
go into a pipe; a thread copies what comes through to the worker's log, at most ``per_point`` bytes per
point and ``per_worker`` bytes in all, and writes one note where it cuts. The worker's own log lines go
straight to the log, uncapped. A point is told apart from the next by ``current_point()`` (any value that
changes from one point to the next, e.g. the point's start time).
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import Any, Callable

PER_POINT = 1 << 20    # bytes of output kept per point
PER_WORKER = 16 << 20  # bytes of output kept per worker process


class OutputCap:
    def __init__(self, current_point: Callable[[], Any], per_point: int = PER_POINT,
                 per_worker: int = PER_WORKER) -> None:
        self.current_point, self.per_point, self.per_worker = current_point, per_point, per_worker
        self.log_fd = os.dup(1)
        self.point: Any = object()
        self.point_bytes = self.total = self.dropped = 0
        self.noted_point = self.noted_worker = False
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self.read_end = read_end
        raw = os.fdopen(os.dup(self.log_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        for handler in logging.getLogger().handlers:  # our own lines: straight to the log
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setStream(raw)
        self.thread = threading.Thread(target=self._copy, name="output-cap", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _copy(self) -> None:
        while True:
            try:
                data = os.read(self.read_end, 1 << 16)
            except OSError:
                return
            if not data:
                return
            self._write(data)

    def _write(self, data: bytes) -> None:
        point = self.current_point()
        if point != self.point:
            self.point, self.point_bytes, self.noted_point = point, 0, False
        room = min(self.per_point - self.point_bytes, self.per_worker - self.total)
        kept = data[: max(room, 0)]
        if kept:
            os.write(self.log_fd, kept)
            self.point_bytes += len(kept)
            self.total += len(kept)
        if len(kept) < len(data):
            self.dropped += len(data) - len(kept)
            if self.total >= self.per_worker and not self.noted_worker:
                self.noted_worker = True
                self._note(f"output of this worker cut after {self.per_worker} bytes (per-worker cap); "
                           "later output is dropped")
            elif self.total < self.per_worker and not self.noted_point:
                self.noted_point = True
                self._note(f"output of this point cut after {self.per_point} bytes (per-point cap); "
                           "the rest of it is dropped")

    def _note(self, text: str) -> None:
        os.write(self.log_fd, f"\n[mcc: {text}]\n".encode())

    def close(self) -> None:
        """Flush, stop capturing (fds 1 and 2 point at the log again) and let the copier drain the pipe."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)
        self.thread.join(timeout=5)
