"""Where scheduler commands run: here, as a subprocess (an SSH runner to a login node can sit beside it)."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from mcc.errors import ConfigError, ProviderError
from mcc.providers.local import processes


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "Result":
        if self.returncode != 0:
            raise SchedulerError(f"`{' '.join(self.argv[:3])} …` failed (exit {self.returncode}): "
                                 f"{(self.stderr or self.stdout).strip()[-800:]}")
        return self


class SchedulerError(ProviderError):
    """A scheduler command ran and failed."""


class SchedulerMissing(ConfigError):
    """The scheduler's commands are not installed (not on PATH)."""


class Runner(Protocol):
    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 60.0) -> Result: ...


class LocalRunner:
    """Runs commands on this machine (the login node), each in its own process group with a timeout."""

    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 60.0) -> Result:
        try:
            done = processes.run_bounded(argv, timeout=timeout, input=stdin if stdin is not None else "",
                                         capture_output=True, text=True)
        except FileNotFoundError:
            raise SchedulerMissing(
                f"`{argv[0]}` is not on PATH, so the Slurm backend cannot submit jobs. Run mcc on the cluster's "
                f"login node (or load its Slurm module, e.g. `module load slurm`), or use --backend local."
            ) from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"`{' '.join(argv[:3])} …` did not answer within {timeout:.0f} s") from None
        return Result(list(argv), done.returncode, done.stdout or "", done.stderr or "")
