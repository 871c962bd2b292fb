"""The user's project: points.py, the entry point, combine_data.py, chunking, mcc init."""
from __future__ import annotations

import math
import re
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from mcc.project.settings import VALID_KEYS, Settings, load_settings
from mcc.errors import ProjectError
from mcc.project.folder import (Entry, auto_chunk_size, load_combiner, load_function, load_points,
                         load_project, resolve_entry, rows_from_result)
from mcc.project.scaffold import TEMPLATE_FILES, init_project

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"
needs_seed = pytest.mark.skipif(not (SEED / "points.py").is_file(),
                                reason=f"the original mCC seed files are not at {SEED}")


def make(tmp_path: Path, **files: str) -> Path:
    """Write files (name -> source; '__' in a name means '/') into a fresh project dir."""
    root = tmp_path / "proj"
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def project_error(func, *args) -> str:
    with pytest.raises(ProjectError) as info:
        func(*args)
    return str(info.value)


def points_error(tmp_path: Path, source: str) -> str:
    root = make(tmp_path, **{"points.py": source})
    message = project_error(load_points, root)
    assert "points.py" in message
    return message


# ---------------------------------------------------------------- points

def test_points_list_of_lists(tmp_path):
    root = make(tmp_path, **{"points.py": "def get_points():\n    return [[1, 2], [3.5, 4]]\n"})
    points = load_points(root)
    assert points.dtype == np.float64 and points.shape == (2, 2)
    assert points.tolist() == [[1.0, 2.0], [3.5, 4.0]]


@pytest.mark.parametrize("expr, shape", [
    ("((1, 2, 3), (4, 5, 6))", (2, 3)),
    ("np.zeros((4, 3), dtype=np.float32)", (4, 3)),
    ("np.arange(5)", (5, 1)),
    ("[0.1, 0.2, 0.3]", (3, 1)),
    ("[np.float64(1.0), np.int64(2)]", (2, 1)),
    ("[[np.float32(1.0), 2], (3, np.int8(4))]", (2, 2)),
    ("[np.array([1.0, 2.0]), np.array([3.0, 4.0])]", (2, 2)),
    ("([i, i / 2] for i in range(5))", (5, 2)),  # any iterable: a generator is read once into one array
    ("map(float, range(3))", (3, 1)),
    ("iter(np.zeros((4, 3)))", (4, 3)),
])
def test_points_accepted_shapes(tmp_path, expr, shape):
    root = make(tmp_path, **{"points.py": f"import numpy as np\ndef get_points():\n    return {expr}\n"})
    points = load_points(root)
    assert points.shape == shape and points.dtype == np.float64


def test_points_file_missing(tmp_path):
    root = make(tmp_path)
    message = project_error(load_points, root)
    assert "No points.py" in message and str(root) in message
    assert "def get_points():" in message and "return" in message


def test_points_import_raises(tmp_path):
    message = points_error(tmp_path, "import numpy as np\nx = 1\nraise RuntimeError('no data file')\n")
    assert "RuntimeError: no data file" in message
    assert "points.py line 3" in message and "raise RuntimeError" in message


def test_points_import_missing_module(tmp_path):
    message = points_error(tmp_path, "import numpyy\ndef get_points():\n    return [[1]]\n")
    assert "ModuleNotFoundError" in message and "numpyy" in message and "points.py line 1" in message


def test_points_syntax_error(tmp_path):
    message = points_error(tmp_path, "def get_points(:\n    return [[1]]\n")
    assert "SyntaxError" in message and "points.py line 1" in message


def test_points_get_points_raises(tmp_path):
    message = points_error(tmp_path, """\
        def helper():
            return 1 / 0

        def get_points():
            return [[helper()]]
        """)
    assert "ZeroDivisionError" in message and "division by zero" in message
    assert "points.py line 2" in message and "return 1 / 0" in message
    assert "get_points()" in message


def test_points_sys_exit_is_caught(tmp_path):
    message = points_error(tmp_path, "import sys\nsys.exit(3)\n")
    assert "SystemExit" in message and "points.py line 2" in message


def test_points_no_get_points(tmp_path):
    message = points_error(tmp_path, "def get_point():\n    return [[1]]\n")
    assert "defines no function get_points()" in message and "def get_points():" in message


@pytest.mark.parametrize("expr, detail", [
    ("{'a': 1}", "returned dict"),
    ("None", "returned NoneType"),
    ("42", "returned int"),
    ("'0.1 0.2'", "returned str"),
])
def test_points_not_a_list(tmp_path, expr, detail):
    message = points_error(tmp_path, f"def get_points():\n    return {expr}\n")
    assert detail in message and "not a list, tuple, numpy array or other iterable of points" in message


@pytest.mark.parametrize("expr, detail", [
    ("iter([[1.0, 2.0], [3.0]])", "yielded point 1 with 1 coordinate(s) where point 0 has 2"),
    ("iter([[1.0, 2.0], ['a', 'b']])", "yielded a point unlike the first"),
    ("iter([['a', 1.0], [2.0, 3.0]])", "point 0"),  # a bad first point: named by the one-by-one check
    ("iter([])", "no points"),
])
def test_points_bad_iterables(tmp_path, expr, detail):
    assert detail in points_error(tmp_path, f"def get_points():\n    return {expr}\n")


@pytest.mark.parametrize("expr", ["[]", "()", "__import__('numpy').zeros((0, 3))"])
def test_points_empty(tmp_path, expr):
    assert "no points" in points_error(tmp_path, f"def get_points():\n    return {expr}\n")


def test_points_with_no_coordinates(tmp_path):
    assert "point 0 is empty" in points_error(tmp_path, "def get_points():\n    return [[], []]\n")


def test_points_ragged(tmp_path):
    message = points_error(tmp_path, "def get_points():\n    return [[1, 2], [3, 4], [5], [6, 7]]\n")
    assert "ragged" in message and "point 2 has 1 coordinate(s)" in message and "point 0 has 2" in message


def test_points_ragged_scalar_and_list(tmp_path):
    message = points_error(tmp_path, "def get_points():\n    return [1.0, [2.0, 3.0]]\n")
    assert "point 1" in message


@pytest.mark.parametrize("expr, detail", [
    ("[[1, 2], [3, 'x']]", "'x' (str) in point 1"),
    ("[[1, 2], [3, 4], [None, 5]]", "None (NoneType) in point 2"),
    ("[[1, 2], [3, 1+2j]]", "(1+2j) (complex) in point 1"),
    ("[['1.0', '2.0']]", "'1.0' (str) in point 0"),
])
def test_points_non_numeric(tmp_path, expr, detail):
    message = points_error(tmp_path, f"def get_points():\n    return {expr}\n")
    assert "non-numeric" in message and detail in message


@pytest.mark.parametrize("expr, index", [
    ("[[0, 1], [2, float('nan')]]", 1),
    ("[[0, 1], [2, 3], [float('inf'), 0]]", 2),
    ("__import__('numpy').array([[0.0], [1.0], [2.0], [-float('inf')]])", 3),
])
def test_points_not_finite(tmp_path, expr, index):
    message = points_error(tmp_path, f"def get_points():\n    return {expr}\n")
    assert "NaN or infinite" in message and f"in point {index}" in message


def test_points_sibling_import_and_sys_path_restored(tmp_path):
    root = make(tmp_path, **{"grid.py": "N = 4\n",
                             "points.py": "import grid\ndef get_points():\n"
                                          "    return [[i] for i in range(grid.N)]\n"})
    before = list(sys.path)
    assert load_points(root).shape == (4, 1)
    assert sys.path == before


def test_points_fresh_module_each_call(tmp_path):
    root = make(tmp_path, **{"points.py": "def get_points():\n    return [[1]]\n"})
    assert load_points(root).shape == (1, 1)
    (root / "points.py").write_text("def get_points():\n    return [[1], [2]]\n")
    assert load_points(root).shape == (2, 1)


def test_points_missing_project_dir(tmp_path):
    message = project_error(load_points, tmp_path / "nope")
    assert "does not exist" in message and "mcc init" in message


@needs_seed
def test_seed_points_load_unchanged():
    points = load_points(SEED)
    assert points.shape == (19_710, 3) and points.dtype == np.float64
    assert np.isfinite(points).all()


# ---------------------------------------------------------------- entry points

ENTRY_SRC = "def compute(point):\n    return [*point, sum(point)]\n"


def test_resolve_function_entry(tmp_path):
    root = make(tmp_path, **{"physics.py": ENTRY_SRC})
    entry = resolve_entry(root, "physics:compute")
    assert entry == Entry("function", "physics:compute")
    assert "physics:compute" in entry.describe()
    assert load_function(root, "physics:compute")([1.0, 2.0]) == [1.0, 2.0, 3.0]


def test_function_entry_in_package_with_relative_import(tmp_path):
    root = make(tmp_path, **{"pkg____init__.py": "", "pkg__consts.py": "SCALE = 10\n",
                             "pkg__model.py": "from .consts import SCALE\n"
                                              "def run(point):\n    return [point[0] * SCALE]\n"})
    assert resolve_entry(root, "pkg.model:run").kind == "function"
    assert load_function(root, "pkg.model:run")([2.0]) == [20.0]


def test_two_projects_with_same_module_name_do_not_collide(tmp_path):
    a = make(tmp_path / "a", **{"entry.py": "def compute(p):\n    return ['a']\n"})
    b = make(tmp_path / "b", **{"entry.py": "def compute(p):\n    return ['b']\n"})
    assert load_function(a, "entry:compute")([0]) == ["a"]
    assert load_function(b, "entry:compute")([0]) == ["b"]
    assert "entry" not in sys.modules


def test_resolve_script_entry(tmp_path):
    root = make(tmp_path, **{"scripts__run.py": "print('hi')\n"})
    assert resolve_entry(root, "scripts/run.py") == Entry("script", "scripts/run.py")
    assert resolve_entry(root, str(root / "scripts" / "run.py")) == Entry("script", "scripts/run.py")
    assert "python scripts/run.py OUTFILE" in Entry("script", "scripts/run.py").describe()


def test_script_outside_project(tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_text("")
    root = make(tmp_path)
    assert "outside the project directory" in project_error(resolve_entry, root, str(outside))


def test_auto_detect_entry(tmp_path):
    root = make(tmp_path, **{"entry.py": ENTRY_SRC})
    assert resolve_entry(root, None) == Entry("function", "entry:compute")


def test_auto_detect_nothing_found(tmp_path):
    message = project_error(resolve_entry, make(tmp_path), None)
    assert "No entry point configured" in message
    assert 'entry = "module:function"' in message and 'entry = "script.py"' in message
    assert "--entry" in message


def test_auto_detect_entry_without_compute(tmp_path):
    root = make(tmp_path, **{"entry.py": "def calc(point):\n    return [1]\n"})
    message = project_error(resolve_entry, root, None)
    assert "entry.py" in message and "`compute`" in message and "--entry" in message


def test_missing_module(tmp_path):
    root = make(tmp_path)
    message = project_error(resolve_entry, root, "physics:compute")
    assert "module physics not found" in message and str(root / "physics.py") in message


def test_module_raising_at_import(tmp_path):
    root = make(tmp_path, **{"physics.py": "import os\nCONST = os.environ['NO_SUCH_VAR_MCC']\n"})
    message = project_error(resolve_entry, root, "physics:compute")
    assert "KeyError" in message and "NO_SUCH_VAR_MCC" in message
    assert "physics.py line 2" in message


def test_error_location_ignores_frozen_frames_when_cwd_is_project(tmp_path, monkeypatch):
    root = make(tmp_path, **{"physics.py": "import os\nCONST = os.environ['NO_SUCH_VAR_MCC']\n"})
    monkeypatch.chdir(root)
    message = project_error(resolve_entry, root, "physics:compute")
    assert "physics.py line 2" in message and "frozen" not in message


def test_module_with_syntax_error(tmp_path):
    root = make(tmp_path, **{"physics.py": "def compute(point)\n    return point\n"})
    message = project_error(resolve_entry, root, "physics:compute")
    assert "SyntaxError" in message and "physics.py line 1" in message


def test_missing_function_suggests(tmp_path):
    root = make(tmp_path, **{"physics.py": ENTRY_SRC})
    message = project_error(resolve_entry, root, "physics:compte")
    assert "has no `compte`" in message and "Did you mean physics:compute?" in message
    assert str(root / "physics.py") in message


def test_entry_not_callable(tmp_path):
    root = make(tmp_path, **{"physics.py": "compute = 3\n"})
    assert "not a function" in project_error(resolve_entry, root, "physics:compute")


def test_entry_wrong_signature(tmp_path):
    root = make(tmp_path, **{"physics.py": "def compute(point, extra):\n    return point\n"})
    message = project_error(resolve_entry, root, "physics:compute")
    assert "cannot be called with one point" in message and "def compute(point):" in message


def test_missing_script(tmp_path):
    root = make(tmp_path, **{"other.py": ""})
    message = project_error(resolve_entry, root, "run.py")
    assert "does not exist" in message and str(root / "run.py") in message and "other.py" in message


@pytest.mark.parametrize("entry, detail", [
    ("physics", "neither"),
    ("physics.py:compute", '"physics:compute"'),
    ("a:b:c", "neither"),
])
def test_malformed_entry(tmp_path, entry, detail):
    message = project_error(resolve_entry, make(tmp_path), entry)
    assert detail in message and "--entry" in message


def test_load_function_cache_and_reload_on_change(tmp_path):
    root = make(tmp_path, **{"physics.py": ENTRY_SRC})
    f1 = load_function(root, "physics:compute")
    assert load_function(root, "physics:compute") is f1
    path = root / "physics.py"
    path.write_text("def compute(point):\n    return [0]\n")
    stat = path.stat()
    import os
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_function(root, "physics:compute")([5]) == [0]


# ---------------------------------------------------------------- combiner

def test_no_combiner(tmp_path):
    assert load_combiner(make(tmp_path)) is None


def test_combiner_without_function(tmp_path):
    root = make(tmp_path, **{"combine_data.py": "def combine(files, out):\n    pass\n"})
    message = project_error(load_combiner, root)
    assert "combine_data.py" in message and "combine_data(files, fileout)" in message


def test_combiner_raising_at_import(tmp_path):
    root = make(tmp_path, **{"combine_data.py": "import h5pyy\n"})
    message = project_error(load_combiner, root)
    assert "ModuleNotFoundError" in message and "combine_data.py line 1" in message


@needs_seed
def test_seed_combiner_works_unchanged(tmp_path):
    combine = load_combiner(SEED)
    assert callable(combine)
    files = []
    for i, rows in enumerate([np.ones((2, 5)), np.full((3, 5), 2.0)]):
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=rows)
        files.append(str(path))
    out = tmp_path / "combined.h5"
    combine(files, str(out))
    with h5py.File(out, "r") as f:
        data = f["data"][:]
    assert data.shape == (5, 5) and data[:2].sum() == 10 and data[2:].sum() == 30


# ---------------------------------------------------------------- results

@pytest.mark.parametrize("result, shape", [
    ([1, 2, 3], (1, 3)),
    ((1.0, 2.0), (1, 2)),
    (np.arange(4), (1, 4)),
    ([[1, 2], [3, 4], [5, 6]], (3, 2)),
    (np.zeros((2, 5), dtype=np.float32), (2, 5)),
    ([np.float64(1.0), 2], (1, 2)),
])
def test_rows_from_result_shapes(result, shape):
    rows = rows_from_result(result, 7, "m:f")
    assert rows.shape == shape and rows.dtype == np.float64


@pytest.mark.parametrize("result, detail", [
    (None, "NoneType None"),
    (3.5, "float 3.5"),
    ("1,2,3", "str '1,2,3'"),
    ({"e": 1}, "dict"),
    ([[1, 2], [3]], "ragged"),
    (["a", "b"], "non-numeric"),
    (np.zeros((2, 2, 2)), "3-D array"),
    ([], "no values"),
    ([1 + 2j], "non-numeric"),
])
def test_rows_from_result_bad(result, detail):
    with pytest.raises(ProjectError) as info:
        rows_from_result(result, 42, "bands:bands")
    message = str(info.value)
    assert "bands:bands" in message and "point 42" in message and detail in message


# ---------------------------------------------------------------- chunk size

@pytest.mark.parametrize("spp", [1e-6, 1e-3, 0.01, 0.3, 1.0, 2.0, 3.0, 60.0, 3600.0])
@pytest.mark.parametrize("n_points", [1, 5, 100, 19_710, 10**7])
@pytest.mark.parametrize("workers", [1, 2, 16, 500])
def test_auto_chunk_size_properties(spp, n_points, workers):
    size = auto_chunk_size(spp, n_points, workers)
    assert isinstance(size, int) and 1 <= size <= 10_000
    assert size <= max(1, math.ceil(2.0 / spp))
    if n_points >= 4 * workers:
        assert math.ceil(n_points / size) >= 4 * workers
    else:
        assert size == 1


def test_auto_chunk_size_targets_two_seconds():
    assert auto_chunk_size(0.01, 10**7, 2) == 200
    assert auto_chunk_size(0.3, 10**7, 2) == 7
    assert auto_chunk_size(5.0, 10**7, 2) == 1
    assert auto_chunk_size(1e-9, 10**9, 1) == 10_000
    assert auto_chunk_size(0.001, 19_710, 2) == 2000
    assert auto_chunk_size(0.001, 19_710, 8) == 19_710 // 32


def test_auto_chunk_size_caps_a_chunks_result_bytes():
    big = 5 * 4096 * 8  # B11's big rows: a 5 × 4096 float64 array per point
    assert auto_chunk_size(1e-4, 1000, 2, big) == 2**20 // big == 6
    assert auto_chunk_size(1e-4, 1000, 2, 24) == 125  # small rows: the balance rule decides, as before
    assert auto_chunk_size(1e-4, 1000, 2, 2**21) == 1  # one point's rows above the cap: one point a chunk
    assert auto_chunk_size(5.0, 10**7, 2, 8) == 1


def test_auto_chunk_size_degenerate_inputs():
    assert auto_chunk_size(0.0, 10**6, 1) == 10_000
    assert auto_chunk_size(float("nan"), 100, 1) == 25
    assert auto_chunk_size(float("inf"), 100, 1) == 1
    assert auto_chunk_size(0.01, 0, 4) == 1
    assert auto_chunk_size(0.01, 1000, 0) == 200


# ---------------------------------------------------------------- whole project and mcc init

def test_load_project(tmp_path):
    root = make(tmp_path, **{"points.py": "def get_points():\n    return [[0.0, 1.0]] * 10\n",
                             "physics.py": ENTRY_SRC,
                             "combine_data.py": "def combine_data(files, fileout):\n    pass\n"})
    project = load_project(root, Settings(entry="physics:compute"))
    assert project.dir == root.resolve() and project.points.shape == (10, 2)
    assert project.entry == Entry("function", "physics:compute")
    assert project.combine == root.resolve() / "combine_data.py"


def test_load_project_reports_entry_problems_first(tmp_path):
    root = make(tmp_path, **{"points.py": "def get_points():\n    return [[0.0]]\n"})
    assert "run.py" in project_error(load_project, root, Settings(entry="run.py"))


def test_init_project_writes_loadable_project(tmp_path):
    target = tmp_path / "new" / "sweep"
    written = init_project(target)
    assert [p.name for p in written] == list(TEMPLATE_FILES)
    assert all(p.is_file() for p in written)
    settings = load_settings(target)
    assert settings == Settings()
    project = load_project(target, settings)
    assert project.entry == Entry("function", "entry:compute")
    assert project.combine == target.resolve() / "combine_data.py" and load_combiner(target) is not None
    assert 20 <= project.points.shape[0] <= 200 and project.points.shape[1] == 1
    compute = load_function(target, project.entry.target)
    for index in (0, len(project.points) // 2, len(project.points) - 1):
        rows = rows_from_result(compute(project.points[index].tolist()), index, project.entry.target)
        assert rows.shape[0] == 1 and rows.shape[1] >= 2 and np.isfinite(rows).all()


def test_init_template_toml_documents_every_setting(tmp_path):
    init_project(tmp_path)
    text = (tmp_path / "mcc.toml").read_text()
    for key in VALID_KEYS:
        if key not in ("aws", "slurm"):
            assert re.search(rf"^# {key} = ", text, re.M), key
    assert "# [aws]" in text and "# [slurm]" in text
    # uncommenting every setting still gives a valid file
    uncommented = re.sub(r"^# (\[(?:aws|slurm)\]|\w+ = .*)$", r"\1", text, flags=re.M)
    (tmp_path / "mcc.toml").write_text(uncommented)
    settings = load_settings(tmp_path)
    assert settings.entry == "entry:compute" and settings.aws == {"region": "us-east-1"}


def test_init_refuses_to_overwrite(tmp_path):
    (tmp_path / "points.py").write_text("# mine\n")
    (tmp_path / "mcc.toml").write_text("workers = 9\n")
    message = project_error(init_project, tmp_path)
    assert "Refusing to overwrite" in message
    assert str(tmp_path / "points.py") in message and str(tmp_path / "mcc.toml") in message
    assert "entry.py" not in message.split(":", 1)[1].split(".")[0]
    assert not (tmp_path / "entry.py").exists(), "nothing is written when refusing"
    assert (tmp_path / "points.py").read_text() == "# mine\n"


def test_init_on_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("")
    assert "is a file" in project_error(init_project, path)
