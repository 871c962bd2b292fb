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
