"""examples/kpoints: the graphene bands are right, as a function and as an original-style script."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mcc.project.settings import load_settings
from mcc.project.folder import Entry, load_function, load_project, resolve_entry, rows_from_result

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kpoints"
T = 2.7
A = 2.46
K_POINT = (4 * math.pi / (3 * A), 0.0, 0.0)


def run_script(outfile: Path, point) -> subprocess.CompletedProcess:
    args = [sys.executable, str(EXAMPLE / "bands_script.py"), str(outfile), *map(repr, point)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=EXAMPLE.parent)


def test_example_project_loads():
    settings = load_settings(EXAMPLE)
    assert settings.entry == "bands:bands" and settings.workers == 2
    project = load_project(EXAMPLE, settings)
    assert project.entry == Entry("function", "bands:bands") and project.combine is None
    n, dims = project.points.shape
    assert dims == 3 and 2_500 <= n <= 3_500
    assert len(np.unique(project.points[:, 2])) >= 2, "a few kz values"
    # Gamma and the K corner are both on the grid
    assert np.any(np.all(np.abs(project.points - 0.0) < 1e-12, axis=1))
    assert np.any(np.all(np.abs(project.points - np.array(K_POINT)) < 1e-12, axis=1))
    # every in-plane k lies in the hexagonal Brillouin zone (|k . n| <= |Gamma-M|)
    apothem = 2 * math.pi / (math.sqrt(3) * A)
    for angle in (30, 90, 150):
        n_hat = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        assert np.all(np.abs(project.points[:, :2] @ n_hat) <= apothem * (1 + 1e-9))


def test_script_entry_resolves():
    assert resolve_entry(EXAMPLE, "bands_script.py") == Entry("script", "bands_script.py")


def test_function_physics():
    bands = load_function(EXAMPLE, "bands:bands")
    gamma = rows_from_result(bands([0.0, 0.0, 0.0]), 0, "bands:bands")
    assert gamma.shape == (1, 5)
    assert gamma[0, 3] == pytest.approx(-3 * T, abs=1e-9)
    assert gamma[0, 4] == pytest.approx(3 * T, abs=1e-9)
    k = bands(list(K_POINT))
    assert k[:3] == pytest.approx(list(K_POINT))
    assert abs(k[3]) < 1e-9 and abs(k[4]) < 1e-9
    # kz is ignored, and the bands are symmetric
    assert bands([0.3, -0.2, 0.05])[3:] == pytest.approx(bands([0.3, -0.2, 0.0])[3:])
    for row in map(bands, ([0.1, 0.7, 0.0], [-1.2, 0.4, 0.025])):
        assert row[3] == pytest.approx(-row[4]) and 0 <= row[4] <= 3 * T + 1e-12


def test_function_over_all_points_is_bounded():
    project = load_project(EXAMPLE, load_settings(EXAMPLE))
    bands = load_function(EXAMPLE, "bands:bands")
    rows = np.vstack([rows_from_result(bands(p), i, "bands:bands")
                      for i, p in enumerate(project.points.tolist())])
    assert rows.shape == (len(project.points), 5)
    assert np.all(rows[:, 4] >= -1e-12) and np.all(rows[:, 4] <= 3 * T + 1e-9)
    assert np.allclose(rows[:, :3], project.points)


def test_script_appends_rows_in_original_convention(tmp_path):
    outfile = tmp_path / "part.h5"
    for point in ((0.0, 0.0, 0.0), K_POINT):
        done = run_script(outfile, point)
        assert done.returncode == 0, done.stderr
    with h5py.File(outfile, "r") as f:
        dset = f["data"]
        assert dset.shape == (2, 5) and dset.maxshape == (None, 5) and dset.dtype == np.float64
        data = dset[:]
    assert data[0].tolist() == pytest.approx([0, 0, 0, -3 * T, 3 * T], abs=1e-9)
    assert data[1, :3].tolist() == pytest.approx(list(K_POINT))
    assert abs(data[1, 3]) < 1e-9 and abs(data[1, 4]) < 1e-9
    # the script and the function agree
    bands = load_function(EXAMPLE, "bands:bands")
    assert data[1].tolist() == pytest.approx(bands(list(K_POINT)), abs=1e-12)


def test_script_usage_error(tmp_path):
    done = run_script(tmp_path / "x.h5", (0.0, 0.0))
    assert done.returncode == 2 and "usage: python bands_script.py OUTFILE kx ky kz" in done.stderr
    assert not (tmp_path / "x.h5").exists()


def test_script_does_not_import_mcc():
    lines = (EXAMPLE / "bands_script.py").read_text().splitlines()
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    assert imports and not any("mcc" in line for line in imports)
