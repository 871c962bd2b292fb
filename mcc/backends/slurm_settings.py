"""The ``[slurm]`` table of mcc.toml, validated into SlurmSettings (each problem names the key and the fix)."""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from mcc.errors import ConfigError
from mcc.providers.slurm.scheduler import owned_option, time_limit_seconds

MEM_RE = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None         # None = the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time_limit: str = "1-00:00:00"       # per worker array task (Slurm's D-HH:MM:SS, HH:MM:SS or minutes)
    manager_time_limit: str | None = None  # the manager job's; default: time_limit
    manager_partition: str | None = None   # the manager job's; default: partition
    cpus_per_worker: int = 1
    mem_per_worker: str | None = None    # e.g. "2G"
    workers: int | None = None           # array tasks at once (--array=…%N); default: the run's `workers`
    bucket_dir: str | None = None        # a folder the compute nodes share; default $MCC_HOME/slurm-buckets
    sbatch_args: list[str] = field(default_factory=list)  # extra sbatch options for site specifics
    core_hour_usd: float = 0.0           # what one core-hour costs (SUs priced by the user)
    requeue: bool = True                 # preempted worker tasks come back (--requeue)
    tick_seconds: float = 1.0            # manager supervision period
    poll_seconds: float = 5.0            # the manager's squeue period (one call for every task)
    manager_boot_seconds: float = 1800.0  # a manager job silent this long after submission is replaced

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _types(f: dataclasses.Field) -> tuple[type, ...]:
    if f.name == "sbatch_args":
        return (list,)
    if f.name in ("cpus_per_worker", "workers"):
        return (int,)
    if isinstance(f.default, bool):
        return (bool,)
    if isinstance(f.default, float):
        return (int, float)
    return (str,)


_TYPES = {f.name: _types(f) for f in dataclasses.fields(SlurmSettings)}


def slurm_settings(table: Mapping[str, Any] | None, source: str = "mcc.toml [slurm]") -> SlurmSettings:
    """Validate the [slurm] table."""
    table = {k: v for k, v in dict(table or {}).items() if v is not None}
    for key, value in table.items():
        if key not in _TYPES:
            close = difflib.get_close_matches(key, list(_TYPES), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"{source}: unknown key `{key}`.{hint} Valid keys: {', '.join(_TYPES)}.")
        kinds = _TYPES[key]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join("a number" if t is float else "an integer" if t is int else t.__name__ for t in kinds)
            raise ConfigError(f"{source}: `{key}` must be {names}, got {value!r}.")
    s = SlurmSettings(**table)
    for key in ("time_limit", "manager_time_limit"):
        value = getattr(s, key)
        if value is None:
            continue
        try:
            time_limit_seconds(value)
        except ValueError:
            raise ConfigError(
                f"{source}: `{key}` = {value!r} is not a Slurm time limit. Fix: write minutes (\"90\"), "
                f"\"HH:MM:SS\" (\"12:00:00\") or \"D-HH:MM:SS\" (\"1-00:00:00\").") from None
    for key in ("cpus_per_worker", "workers"):
        if getattr(s, key) is not None and getattr(s, key) < 1:
            raise ConfigError(f"{source}: `{key}` must be an integer >= 1, got {getattr(s, key)}.")
    if s.mem_per_worker is not None and not MEM_RE.match(s.mem_per_worker):
        raise ConfigError(f"{source}: `mem_per_worker` = {s.mem_per_worker!r} is not a Slurm memory size; "
                          f"write e.g. \"2G\" or \"500M\".")
    for key in ("tick_seconds", "poll_seconds", "manager_boot_seconds"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"{source}: `{key}` must be > 0, got {getattr(s, key)}.")
    if s.core_hour_usd < 0:
        raise ConfigError(f"{source}: `core_hour_usd` must be >= 0, got {s.core_hour_usd}.")
    for arg in s.sbatch_args:
        if not isinstance(arg, str) or not arg.startswith("-"):
            raise ConfigError(f"{source}: `sbatch_args` holds sbatch options like \"--constraint=haswell\"; "
                              f"{arg!r} is not one.")
        opt = owned_option(arg)
        if opt:
            raise ConfigError(
                f"{source}: `sbatch_args` entry {arg!r} sets {opt}, which mcc owns (it tags, names and logs every "
                f"job and sizes the worker array itself). Remove it; use `workers` for the array size.")
    return s
