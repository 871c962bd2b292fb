"""`mcc init DIR` writes a project that `mcc run` runs as is, and its combine_data.py is the one used."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from tests.conftest import mcc, mcc_json


def test_init_then_run_uses_the_scaffolded_combiner(mcc_home: Path, tmp_path: Path) -> None:
    proc = mcc("init", "sweep", home=mcc_home, cwd=tmp_path, check=True)
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert names == ["combine_data.py", "entry.py", "mcc.toml", "points.py"]
    assert "created" in proc.stdout and "combine_data.py" in proc.stdout

    out = mcc_json("run", "sweep", "--chunk-size", "7", home=mcc_home, cwd=tmp_path)
    assert out["state"] == "completed" and out["done"] == out["points"] == 51
    with h5py.File(out["result"], "r") as fh:
        rows = fh["data"][...]
        columns = [c.decode() if isinstance(c, bytes) else str(c) for c in fh["data"].attrs["columns"]]
        # mcc's attributes are added to the user's combine_data output too (entry.compute.columns)
        assert [c.decode() if isinstance(c, bytes) else str(c) for c in fh.attrs["columns"]] == columns
        assert (fh.attrs["run_id"], int(fh.attrs["missing_points"])) == (out["run_id"], 0)
        assert fh["missing"].shape == (0,)
    # only the scaffolded combine_data.py labels the columns; the built-in combiner does not
    assert columns == ["strain", "energy_eV_per_atom", "pressure_GPa"]
    assert rows.shape == (51, 3)
    np.testing.assert_allclose(rows[:, 0], np.linspace(-0.05, 0.05, 51))
    assert rows[25, 1] == 0.0 and (rows[:, 1] >= 0).all()  # zero energy at zero strain, positive elsewhere
    assert mcc_json("clean", "--all", "--yes", home=mcc_home)["survivors"] == []


def test_init_refuses_an_existing_project(mcc_home: Path, tmp_path: Path) -> None:
    mcc("init", "sweep", home=mcc_home, cwd=tmp_path, check=True)
    proc = mcc("init", "sweep", home=mcc_home, cwd=tmp_path)
    assert proc.returncode == 2 and "Refusing to overwrite" in proc.stderr and "combine_data.py" in proc.stderr
