"""Typed errors. The CLI turns every MccError into a one-paragraph message and a non-zero exit."""
from __future__ import annotations

#: `mcc run` / `mcc resume` exit status of a run that finished with dead points (``completed_with_failures``):
#: the combined file exists but lacks them. 0 = every point has its result, 1 = the run failed.
EXIT_COMPLETED_WITH_FAILURES = 4

#: The install commands mcc's messages advise, run in the mcc checkout (no release is on PyPI yet);
#: README shows each one (tests/test_cli_messages.py checks).
INSTALL_PLOT = 'pip install -e ".[plot]"'
INSTALL_UPGRADE = "git pull && pip install -e ."
INSTALL_REINSTALL = "pip install --force-reinstall -e ."


class MccError(Exception):
    """Base of every error mcc raises on purpose; its text is shown to the user as is."""

    exit_code = 1

    def tell(self, text: str) -> "MccError":
        """Append ``text`` (what was left behind, what to do next) to the message; returns self."""
        if text:
            first = str(self.args[0]) if self.args else ""
            self.args = (f"{first} {text}".strip(), *self.args[1:])
        return self


class ConfigError(MccError):
    """mcc.toml or a command-line flag is wrong (names the file, the field and the fix)."""

    exit_code = 2


class ProjectError(MccError):
    """The user's project (points.py, the entry point, combine_data.py) is unusable."""

    exit_code = 2


class LedgerError(MccError):
    """The ledger file cannot be opened, is locked, or comes from a newer mcc."""


class LedgerBusy(LedgerError):
    """Another mcc process holds the ledger for longer than the busy timeout."""


class LedgerReadOnly(LedgerError):
    """A write was asked of a ledger file (or $MCC_HOME) this process may only read."""


class LedgerDamaged(LedgerError):
    """The ledger file fails SQLite's integrity check; the message says where the backup is."""


class DiskFull(MccError):
    """No space left on the device holding ``path``; ``hint`` (set by the caller that knows the run) says what now."""

    def __init__(self, path: str, free: int | None, needed: int | None = None, hint: str = "") -> None:
        free_text = "unknown space" if free is None else _size(free)
        needed_text = f"; about {_size(needed)} is needed there" if needed else ""
        super().__init__(f"No space left on the device that holds {path}: {free_text} free{needed_text}.")
        self.path, self.free, self.needed = path, free, needed
        self.tell(hint)


class RunBusy(MccError):
    """Another process already drives this run (``mcc resume`` twice at once)."""


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class IllegalTransition(MccError):
    """A state machine was asked for a transition its table does not allow."""


class TransitionConflict(MccError):
    """The row changed state under us (another process moved it first)."""


class UnknownRun(MccError):
    """No run with that id in this ledger."""

    exit_code = 2


class ProviderError(MccError):
    """A provider could not create, find or delete a resource."""


class QueueUnavailable(MccError):
    """The Redis queue cannot be reached."""


class CleanIncomplete(MccError):
    """Clean finished but resources tagged with this ledger survive; ``report`` lists them."""

    exit_code = 3

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
