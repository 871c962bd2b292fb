"""mcc.toml + command-line flags → one validated, typed :class:`Settings`.

Every problem becomes a one-paragraph :class:`~mcc.errors.ConfigError` that names the file (or
the flag), the setting, what was wrong and how to fix it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from mcc.errors import ConfigError

CONFIG_NAME = "mcc.toml"
BACKENDS = ("local", "aws")
#: ``module:function`` (dotted module names allowed; the function may be ``Class.method``).
ENTRY_FUNCTION_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class Settings:
    """Validated settings of one project (defaults apply when mcc.toml or a flag is silent)."""

    backend: str = "local"            # "local" | "aws"
    workers: int = 2                  # >= 1
    chunk_size: int | None = None     # >= 1; None = automatic (see project.auto_chunk_size)
    max_attempts: int = 3             # >= 1
    entry: str | None = None          # "module:function" or "path/to/script.py"; None = auto-detect
    point_timeout: float = 600.0      # seconds per point, > 0
    lease_seconds: float = 30.0       # > 0
    results_dir: str = "results"      # relative to the project dir
    aws: dict = field(default_factory=dict)  # the [aws] table, passed through as is

    def to_dict(self) -> dict:
        """Plain dict of every setting (the ``aws`` table deep-copied), e.g. for a run spec."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Spec:
    kind: str            # "choice" | "int" | "float" | "str" | "entry" | "table"
    expected: str        # human description of what is accepted
    example: str         # a valid TOML value


_SPECS: dict[str, _Spec] = {
    "backend": _Spec("choice", 'one of "local" or "aws"', '"local"'),
    "workers": _Spec("int", "an integer >= 1", "4"),
    "chunk_size": _Spec("int", "an integer >= 1 (leave it out for automatic sizing)", "100"),
    "max_attempts": _Spec("int", "an integer >= 1", "3"),
    "entry": _Spec("entry", 'a string "module:function" or "path/to/script.py"', '"entry:compute"'),
    "point_timeout": _Spec("float", "a number of seconds > 0", "600"),
    "lease_seconds": _Spec("float", "a number of seconds > 0", "30"),
    "results_dir": _Spec("str", "a non-empty string (a folder, relative to the project directory)",
                         '"results"'),
    "aws": _Spec("table", "a table ([aws] section)", '{ region = "us-east-1" }'),
}
VALID_KEYS: tuple[str, ...] = tuple(_SPECS)


def _describe(value: Any) -> str:
    """``'four' (a string)`` — the value and its TOML/Python type, for error messages."""
    kinds = [(bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (dict, "a table"), (list, "an array")]
    kind = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    return f"{value!r} ({kind})"


def _problem(spec: _Spec, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``spec``, or None when it is."""
    if spec.kind == "choice":
        return None if value in BACKENDS else "unknown"
    if spec.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "bad"
    if spec.kind == "float":
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and value > 0)
        return None if ok else "bad"
    if spec.kind == "str":
        return None if isinstance(value, str) and value.strip() else "bad"
    if spec.kind == "entry":
        if not isinstance(value, str) or not value.strip():
            return "bad"
        text = value.strip()
        if text.endswith(".py") and ":" not in text:
            return None
        if ":" in text and text.split(":", 1)[0].endswith(".py"):
            return "py-module"
        return None if ENTRY_FUNCTION_RE.match(text) else "bad"
    if spec.kind == "table":
        return None if isinstance(value, dict) else "bad"
    raise AssertionError(spec.kind)  # pragma: no cover


def _check(key: str, value: Any, where: str, flag: str | None) -> Any:
    """Validate one setting; ``where`` names the file, ``flag`` the CLI option (or None)."""
    spec = _SPECS[key]
    problem = _problem(spec, value)
    if problem is None:
        if spec.kind == "float":
            return float(value)
        if spec.kind in ("entry", "str"):
            return value.strip()
        return value
    if flag:
        head = f"Option {flag} must be {spec.expected}, got {_describe(value)}."
        example = spec.example.strip('"')
        fix = f"Fix: pass e.g. `{flag} {example}`."
    else:
        head = f"{where}: setting `{key}` must be {spec.expected}, got {_describe(value)}."
        fix = f"Fix: write e.g. `{key} = {spec.example}`"
        fix += " or delete the line to use the default." if key != "aws" else "."
    if isinstance(value, bool) and spec.kind in ("int", "float"):
        head += " A boolean (true/false) is not a number."
    elif isinstance(value, str) and spec.kind in ("int", "float"):
        head += " Numbers are written without quotes."
    if problem == "py-module":
        module = value.split(":", 1)[0][:-3].replace("/", ".")
        head += (f" A function entry names the module without `.py`: "
                 f"use \"{module}:{value.split(':', 1)[1]}\".")
    raise ConfigError(f"{head} {fix}")


def _read_file(path: Path) -> dict[str, Any]:
    """Parse mcc.toml; parser, encoding and I/O errors become a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}. Fix the line shown (strings need double quotes, "
            f"e.g. `backend = \"local\"`; numbers do not), or delete the file to use the defaults."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as UTF-8 "
            f"or delete it to use the defaults."
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"Cannot read {path}: {exc.strerror or exc}. Check that it is a readable file "
            f"(not a folder) or remove it to use the defaults."
        ) from exc


def _unknown(key: str, where: str, flag: bool) -> ConfigError:
    """An unknown key/flag: suggest the closest valid one and list them all."""
    close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.5)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    listing = ", ".join(VALID_KEYS)
    if flag:
        return ConfigError(f"Unknown setting override `{key}` (from the command line).{hint} "
                           f"Valid settings are: {listing}.")
    return ConfigError(f"{where}: unknown setting `{key}`.{hint} Valid settings are: {listing} "
                       f"(AWS options go inside the [aws] table). Rename or delete the line.")


def flag_name(key: str) -> str:
    """The command-line flag for a setting: ``chunk_size`` → ``--chunk-size``."""
    return "--" + key.replace("_", "-")


def load_settings(project_dir: Path, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read ``<project_dir>/mcc.toml`` (optional), apply CLI ``overrides`` (None = not given)."""
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        what = "is not a directory" if project_dir.exists() else "does not exist"
        raise ConfigError(f"Project directory {project_dir} {what}; create one with "
                          f"`mcc init {project_dir}` or pass the path of an existing project.")
    path = project_dir / CONFIG_NAME
    values: dict[str, Any] = {}
    if path.exists():
        where = str(path.resolve())
        for key, value in _read_file(path).items():
            if key not in _SPECS:
                raise _unknown(key, where, flag=False)
            values[key] = _check(key, value, where, None)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _SPECS:
            raise _unknown(key, "", flag=True)
        values[key] = _check(key, value, "", flag_name(key))
    if "aws" in values:
        values["aws"] = dict(values["aws"])
    return Settings(**values)
