"""The user's project folder: ``points.py``, the entry point, ``combine_data.py``.

Everything is checked up front, before a run creates any resource, and every problem becomes a
one-paragraph :class:`~mcc.errors.ProjectError` naming the file, what was wrong and the fix.
User modules are imported under private names (``_mcc_proj_<hash>.<module>``) so two projects
with an ``entry.py`` each never collide in ``sys.modules``.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import math
import numbers
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mcc.project.settings import ENTRY_FUNCTION_RE, Settings
from mcc.errors import ProjectError

POINTS_NAME = "points.py"
COMBINE_NAME = "combine_data.py"
AUTO_ENTRY = ("entry", "compute")  # auto-detected entry: entry.py defining compute(point)
POINTS_EXAMPLE = ("import numpy as np\n"
                  "def get_points():\n"
                  "    return [[s] for s in np.linspace(-0.05, 0.05, 51)]")
_ENTRY_FIX = ('set `entry = "module:function"` (a function in a .py file of the project, called '
              'as function(point) -> row) or `entry = "script.py"` (run as `python script.py '
              'OUTFILE x y z ...`) in mcc.toml, or pass `--entry`')
_counter = itertools.count()
_function_cache: dict[tuple[str, str, int], Callable[..., Any]] = {}


@dataclass(frozen=True)
class Entry:
    """How each point is computed: an in-process function or a script run per point."""

    kind: str      # "function" | "script"
    target: str    # "module:function" or script path relative to the project dir

    def describe(self) -> str:
        """One line for humans, e.g. ``function bands:bands`` or ``script run.py``."""
        if self.kind == "function":
            return f"function {self.target} (called in-process once per point)"
        return f"script {self.target} (run as `python {self.target} OUTFILE x y z ...`)"


@dataclass(frozen=True)
class Project:
    """A loaded, validated project: where it is, its points, its entry and its combiner."""

    dir: Path
    points: np.ndarray          # float64, shape (n_points, n_dims)
    entry: Entry
    combine: Path | None        # <dir>/combine_data.py if present


# ---------------------------------------------------------------- importing user code

@contextlib.contextmanager
def _on_sys_path(project_dir: Path) -> Iterator[None]:
    """Put the project dir first on sys.path for the duration (sibling imports work)."""
    entry = str(project_dir)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _where(exc: BaseException, project_dir: Path) -> str:
    """``points.py line 7: `return 1/0``` — the deepest place inside the project that failed."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        text = (exc.text or "").strip()
        return f"{_rel(Path(exc.filename), project_dir)} line {exc.lineno}" + (
            f": `{text}`" if text else "")
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if _inside(Path(f.filename), project_dir)]
    if not frames:
        return "outside the project's files"
    last = frames[-1]
    text = f": `{last.line.strip()}`" if last.line else ""
    return f"{_rel(Path(last.filename), project_dir)} line {last.lineno}{text}"


def _inside(path: Path, project_dir: Path) -> bool:
    """True for a real file under the project ("<frozen os>" or "<string>" never are)."""
    return path.is_absolute() and path.resolve().is_relative_to(project_dir)


def _rel(path: Path, project_dir: Path) -> str:
    return str(path.resolve().relative_to(project_dir)) if _inside(path, project_dir) else str(path)


def failure(exc: BaseException, project_dir: Path, doing: str, fix: str) -> ProjectError:
    """A ProjectError for user code that raised while ``doing`` something."""
    message = str(exc).strip().replace("\n", " ") or "(no message)"
    return ProjectError(f"{doing} raised {type(exc).__name__}: {message} — at "
                        f"{_where(exc, project_dir)} (in {project_dir}). {fix}")


def _package_alias(project_dir: Path) -> str:
    """A private package whose __path__ is the project dir: user modules import beneath it."""
    alias = "_mcc_proj_" + hashlib.sha1(str(project_dir).encode()).hexdigest()[:12]
    if alias not in sys.modules:
        spec = importlib.machinery.ModuleSpec(alias, None, is_package=True)
        spec.submodule_search_locations = [str(project_dir)]
        sys.modules[alias] = importlib.util.module_from_spec(spec)
    return alias


def _module_file(project_dir: Path, module: str) -> Path | None:
    base = project_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_module(project_dir: Path, module: str, fix: str) -> types.ModuleType:
    """Import ``module`` of the project afresh (stale copies dropped) under the private alias."""
    alias = _package_alias(project_dir)
    for name in [n for n in sys.modules if n.startswith(alias + ".")]:
        del sys.modules[name]
    try:
        with _on_sys_path(project_dir):
            return importlib.import_module(f"{alias}.{module}")
    except (Exception, SystemExit) as exc:
        raise failure(exc, project_dir, f"Importing {module.replace('.', '/')}.py", fix) from exc


def _exec_file(path: Path, project_dir: Path, fix: str) -> types.ModuleType:
    """Execute one file as a fresh module with a new name (points.py, combine_data.py)."""
    name = f"_mcc_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # while it runs, as for a normal import (dataclasses need it)
    try:
        with _on_sys_path(project_dir):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise failure(exc, project_dir, f"Importing {path.name}", fix) from exc
    finally:
        sys.modules.pop(name, None)
    return module


def _project_dir(project_dir: Path) -> Path:
    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        what = "is not a directory" if project_dir.exists() else "does not exist"
        raise ProjectError(f"Project directory {project_dir} {what}; create one with "
                           f"`mcc init {project_dir}` or pass the path of an existing project.")
    return project_dir


# ---------------------------------------------------------------- points

def load_points(project_dir: Path) -> np.ndarray:
    """Run ``<dir>/points.py``'s ``get_points()``; return a float64 array (n_points, n_dims)."""
    project_dir = _project_dir(project_dir)
    path = _points_file(project_dir)
    fix = (f"Fix the line shown; check with `python -c \"import points; points.get_points()\"` "
           f"in {project_dir}.")
    module = _exec_file(path, project_dir, fix)
    get_points = getattr(module, "get_points", None)
    if not callable(get_points):
        raise ProjectError(f"{path} defines no function get_points(). Add one that returns a "
                           f"list of points (lists of numbers), e.g.:\n{POINTS_EXAMPLE}")
    try:
        with _on_sys_path(project_dir):
            raw = get_points()
    except (Exception, SystemExit) as exc:
        raise failure(exc, project_dir, f"get_points() in {path}", fix) from exc
    return _as_points(raw, path)


def _points_file(project_dir: Path) -> Path:
    """``<dir>/points.py``, or the ProjectError saying to create it (the first thing a project needs)."""
    path = project_dir / POINTS_NAME
    if not path.is_file():
        raise ProjectError(f"No {POINTS_NAME} in {project_dir}. Create {path} defining "
                           f"get_points() that returns a list of points (lists of numbers), "
                           f"e.g.:\n{POINTS_EXAMPLE}")
    return path


def _bad_points(path: Path, detail: str) -> ProjectError:
    return ProjectError(f"get_points() in {path} {detail} Each point must be a list of numbers "
                        f"and every point must have the same length, e.g. [[0.0, 0.1, 0.0], ...].")


def _as_points(raw: Any, path: Path) -> np.ndarray:
    """Validate what get_points() returned and convert it to a float64 2-D array."""
    if not isinstance(raw, (list, tuple, np.ndarray)):
        if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__iter__"):
            raise _bad_points(path, f"returned {type(raw).__name__} ({_short(raw)}), not a list, "
                                    f"tuple, numpy array or other iterable of points.")
        raw = _from_iterable(iter(raw), path)
    if len(raw) == 0:
        raise _bad_points(path, "returned no points (an empty sequence).")
    try:
        array = np.asarray(raw) if isinstance(raw, np.ndarray) else _in_blocks(raw)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
        array = _slow_points(raw, path)
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[1] == 0:
        raise _bad_points(path, "returned points with no coordinates (point 0 is empty).")
    array = np.ascontiguousarray(array, dtype=np.float64)
    bad = _not_finite(array)
    if bad.size:
        i = int(bad[0])
        raise _bad_points(path, f"returned a NaN or infinite coordinate in point {i} "
                                f"({array[i].tolist()}); {bad.size} point(s) affected.")
    return array


def _in_blocks(raw: list[Any] | tuple[Any, ...], block: int = 1 << 16) -> np.ndarray | None:
    """A list of points as one float64 array, converted a block of points at a time into the array: numpy's
    conversion of a whole nested list holds a cache of every row beside the result (+10 MB transient at a
    million 3-D points). None when a block is not numbers of the first block's shape (the caller's slow
    path then names the point at fault)."""
    first = np.asarray(raw[:block])
    if first.dtype.kind not in "iuf" or first.ndim not in (1, 2):
        return None
    array = np.empty((len(raw),) + first.shape[1:], dtype=np.float64)
    array[: len(first)] = first
    for start in range(block, len(raw), block):
        part = np.asarray(raw[start : start + block])
        if part.dtype.kind not in "iuf" or part.shape[1:] != first.shape[1:]:
            return None
        array[start : start + len(part)] = part
    return array


def _not_finite(array: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Indices of the rows holding a NaN or an infinity, checked a block of rows at a time (the check's
    temporaries stay small beside a million points)."""
    found = [start + np.flatnonzero(~np.isfinite(array[start : start + block]).all(axis=1))
             for start in range(0, len(array), block)]
    return np.concatenate(found)


def _from_iterable(points: Any, path: Path) -> np.ndarray | list[Any]:
    """The points of a generator or other iterable, read once into one float64 array (no list of them
    beside it); a first point that is not a number or a flat list of numbers is left to ``_slow_points``."""
    first = next(points, None)
    if first is None:
        return []
    row = np.asarray(first)
    if row.dtype.kind not in "iuf" or row.ndim > 1 or (row.ndim == 1 and row.size == 0):
        return [first, *points]
    if row.ndim == 0:
        rows, kind = itertools.chain((first,), points), np.dtype(np.float64)
    else:
        rows, kind = _same_length(itertools.chain((first,), points), row.size, path), np.dtype((np.float64, (row.size,)))
    try:
        return np.fromiter(rows, dtype=kind)
    except (ValueError, TypeError) as exc:
        raise _bad_points(path, f"yielded a point unlike the first ({first!r}): {exc}.") from None


def _same_length(points: Any, width: int, path: Path) -> Any:
    """``points``, each checked to have ``width`` coordinates (numpy would broadcast a shorter one)."""
    for i, point in enumerate(points):
        if len(point) != width:
            raise _bad_points(path, f"yielded point {i} with {len(point)} coordinate(s) where point 0 has {width}.")
        yield point


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _slow_points(raw: Any, path: Path) -> np.ndarray:
    """Walk the points one by one to name the first bad one (ragged, nested, non-numeric)."""
    rows: list[list[float]] = []
    width = None
    for i, point in enumerate(raw):
        values = list(point) if isinstance(point, (list, tuple, np.ndarray)) else [point]
        for value in values:
            if not _is_number(value):
                raise _bad_points(path, f"returned a non-numeric value {_short(value)} "
                                        f"({type(value).__name__}) in point {i} ({_short(point)}).")
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise _bad_points(path, f"returned ragged points: point {i} has {len(values)} "
                                    f"coordinate(s) but point 0 has {width}.")
        rows.append([float(v) for v in values])
    return np.asarray(rows, dtype=np.float64)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- entry point

def _parse_entry(entry: str) -> Entry:
    text = entry.strip()
    if text.endswith(".py") and ":" not in text:
        return Entry("script", text)
    module, _, function = text.partition(":")
    if ENTRY_FUNCTION_RE.match(text) and not module.endswith(".py"):
        return Entry("function", text)
    hint = ""
    if function and module.endswith(".py"):
        hint = f' Name the module without ".py": "{module[:-3].replace("/", ".")}:{function}".'
    raise ProjectError(f"Entry {entry!r} is neither \"module:function\" nor \"script.py\".{hint} "
                       f"Fix: {_ENTRY_FIX}.")


def resolve_entry(project_dir: Path, entry: str | None) -> Entry:
    """Parse/auto-detect the entry point and check up front that it can be used."""
    project_dir = _project_dir(project_dir)
    if entry is None:
        module, function = AUTO_ENTRY
        if _module_file(project_dir, module) is None:
            raise ProjectError(f"No entry point configured for {project_dir} and no {module}.py "
                               f"defining {function}(point) to detect. Fix: {_ENTRY_FIX}.")
        try:
            load_function(project_dir, f"{module}:{function}")
        except ProjectError as exc:
            raise ProjectError(f"No entry point configured for {project_dir}, so mcc tried "
                               f"{module}.py:{function}: {exc} Alternatively, {_ENTRY_FIX}.") from exc
        return Entry("function", f"{module}:{function}")
    parsed = _parse_entry(entry)
    if parsed.kind == "function":
        load_function(project_dir, parsed.target)
        return parsed
    script = Path(parsed.target)
    full = script if script.is_absolute() else project_dir / script
    if not _inside(full, project_dir):
        raise ProjectError(f"Entry script {full} is outside the project directory {project_dir}; "
                           f"only the project directory is shipped to workers. Move the script "
                           f"into {project_dir} and set `entry` to its relative path.")
    if not full.is_file():
        scripts = sorted(p.name for p in project_dir.glob("*.py"))
        raise ProjectError(f"Entry script {full} does not exist. Create it (run as `python "
                           f"{parsed.target} OUTFILE x y z ...`, appending its rows to OUTFILE) "
                           f"or fix `entry` in mcc.toml / `--entry`; .py files in the project: "
                           f"{', '.join(scripts) or 'none'}.")
    return Entry("script", str(full.resolve().relative_to(project_dir)))


def load_function(project_dir: Path, target: str) -> Callable[[list[float]], Any]:
    """Import ``module:function`` from the project and return the callable (cached)."""
    project_dir = _project_dir(project_dir)
    parsed = _parse_entry(target)
    if parsed.kind != "function":
        raise ProjectError(f"Entry {target!r} is a script, not a \"module:function\". "
                           f"Fix: {_ENTRY_FIX}.")
    module_name, attr_path = target.strip().split(":", 1)
    path = _module_file(project_dir, module_name)
    if path is None:
        expected = project_dir.joinpath(*module_name.split(".")).with_suffix(".py")
        raise ProjectError(f"Entry {target!r}: module {module_name} not found — expected "
                           f"{expected}. Create it, or fix `entry` in mcc.toml / `--entry`.")
    key = (str(project_dir), target.strip(), path.stat().st_mtime_ns)
    if key in _function_cache:
        return _function_cache[key]
    fix = f"Fix {path} so that it imports cleanly (try `python -c \"import {module_name}\"` there)."
    obj: Any = _import_module(project_dir, module_name, fix)
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(obj).items() if callable(v) and not n.startswith("_")
                     and not isinstance(v, type(sys))]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean {module_name}:{close[0]}?" if close else ""
            raise ProjectError(f"Entry {target!r}: {path} has no `{part}`.{hint} Callables it "
                               f"defines: {', '.join(sorted(names)) or 'none'}. Define "
                               f"`def {part}(point):` returning a row, or fix `entry`.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ProjectError(f"Entry {target!r}: `{attr_path}` in {path} is a "
                           f"{type(obj).__name__}, not a function. Point `entry` at a "
                           f"function taking one point and returning a row.")
    try:
        inspect.signature(obj).bind(None)
    except TypeError as exc:
        raise ProjectError(f"Entry {target!r}: {attr_path}{inspect.signature(obj)} in {path} "
                           f"cannot be called with one point ({exc}). Give it exactly one "
                           f"required parameter: `def {attr_path.split('.')[-1]}(point):`.") from exc
    except ValueError:  # builtins without a signature: trust them
        pass
    _function_cache[key] = obj
    return obj


def load_combiner(project_dir: Path) -> Callable[[list[str], str], None] | None:
    """The project's ``combine_data(files, fileout)``, or None without combine_data.py."""
    project_dir = _project_dir(project_dir)
    path = project_dir / COMBINE_NAME
    if not path.is_file():
        return None
    fix = (f"Fix {path} (it must define combine_data(files, fileout)), or delete it to use the "
           f"built-in combiner that concatenates the `data` datasets.")
    module = _exec_file(path, project_dir, fix)
    combine = getattr(module, "combine_data", None)
    if not callable(combine):
        raise ProjectError(f"{path} defines no function combine_data(files, fileout). Add it "
                           f"(it gets the list of partial HDF5 files and the output path), or "
                           f"delete {COMBINE_NAME} to use the built-in combiner.")
    return combine


def result_columns(project: Project) -> list[str] | None:
    """The names of the result's columns, when the project gives them (the convention, README "Your own
    sweep"): a ``columns`` attribute on the entry function (``compute.columns = ["kx", "E1"]``), else a
    module-level ``columns`` list in combine_data.py. Anything else than a list of strings is ignored."""
    sources: list[Any] = []
    if project.entry.kind == "function":
        sources.append(load_function(project.dir, project.entry.target))
    combine = load_combiner(project.dir)
    if combine is not None:
        sources.append(types.SimpleNamespace(columns=getattr(combine, "__globals__", {}).get("columns")))
    for source in sources:
        names = getattr(source, "columns", None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def entry_sha256(project_dir: Path, entry: Entry) -> str:
    """The SHA-256 of the entry's source file (the script, or the function's module): which code ran."""
    project_dir = _project_dir(project_dir)
    if entry.kind == "script":
        path: Path | None = project_dir / entry.target
    else:
        path = _module_file(project_dir, entry.target.split(":", 1)[0])
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else ""


def rows_from_result(result: Any, point_index: int, target: str) -> np.ndarray:
    """Turn what a function entry returned (a row or rows) into a 2-D float64 array."""
    def bad(what: str) -> ProjectError:
        return ProjectError(f"Entry {target} returned {what} for point {point_index}. It must "
                            f"return one row (a list of numbers, e.g. [*point, energy]) or several "
                            f"rows (a list of equal-length lists or a 2-D numpy array).")

    if result is None or isinstance(result, (str, bytes, dict, numbers.Number)):
        raise bad(f"{type(result).__name__} {_short(result)}")
    try:
        array = np.asarray(result)
    except (ValueError, TypeError) as exc:
        raise bad(f"ragged or unconvertible rows {_short(result)}") from exc
    if array.dtype.kind not in "biuf":
        raise bad(f"non-numeric values {_short(result)}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise bad(f"a {array.ndim}-D array of shape {array.shape}")
    if array.size == 0:
        raise bad(f"no values (shape {array.shape})")
    return np.ascontiguousarray(array, dtype=np.float64)


# ---------------------------------------------------------------- chunking and the whole project

MAX_CHUNK = 10_000
TARGET_CHUNK_SECONDS = 2.0
# A chunk's result file up to this size: the combiner reads it whole in one read and copies its rows
# from the bytes (mcc.work.combine.SMALL_FILE_BYTES), a worker learns its template in milliseconds,
# and rows of 100 KB a point give enough chunks to balance (B11's big rows: 6 points, not 125).
MAX_CHUNK_BYTES = 2**20


def auto_chunk_size(seconds_per_point: float, n_points: int, workers: int, bytes_per_point: int = 0) -> int:
    """Points per chunk: about 2 s of work, within [1, 10_000], at most ``MAX_CHUNK_BYTES`` of result
    (``bytes_per_point``: the first point's rows; 0 = not known), and at least ``4 * workers``
    chunks whenever there are that many points (so the load balances and a lost chunk is cheap).

    ``seconds_per_point`` <= 0 or NaN means "too fast to measure" (the upper bound applies).
    """
    if math.isnan(seconds_per_point) or seconds_per_point <= 0:
        size = MAX_CHUNK
    elif math.isinf(seconds_per_point):
        size = 1
    else:
        size = min(MAX_CHUNK, max(1, math.ceil(TARGET_CHUNK_SECONDS / seconds_per_point)))
    if bytes_per_point > 0:
        size = min(size, max(1, MAX_CHUNK_BYTES // bytes_per_point))
    balanced = max(1, n_points // (4 * max(1, workers)))
    return max(1, min(size, balanced))


def load_project(project_dir: Path, settings: Settings) -> Project:
    """Validate the whole project up front (entry, points, combiner); creates nothing."""
    project_dir = _project_dir(project_dir)
    _points_file(project_dir)  # an empty folder hears about points.py first, then about the entry
    entry = resolve_entry(project_dir, settings.entry)
    points = load_points(project_dir)
    combine = project_dir / COMBINE_NAME
    load_combiner(project_dir)
    return Project(project_dir, points, entry, combine if combine.is_file() else None)
