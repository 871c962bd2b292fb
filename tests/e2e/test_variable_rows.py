"""An entry that returns a different number of rows per point (a band count that varies with k, say):
the combined file's ``point_index`` still names the point of every row, a dead point included."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mcc.errors import EXIT_COMPLETED_WITH_FAILURES
from tests.conftest import mcc

VARIABLE = """
if i == 11:
    raise ValueError("no convergence")
return [[point[0], float(k), 0.5] for k in range(1 + i % 3)]
"""


def test_point_index_of_an_entry_with_variable_rows_per_point(mcc_home: Path, make_project) -> None:
    project = make_project(24, body=VARIABLE, toml="max_attempts = 1\nchunk_size = 4\nworkers = 2\n")
    proc = mcc("run", str(project), "--json", home=mcc_home)
    assert proc.returncode == EXIT_COMPLETED_WITH_FAILURES, proc.stderr
    (result,) = (project / "results").glob("*/combined.h5")
    with h5py.File(result, "r") as fh:
        index, data = fh["point_index"][...], fh["data"][...]
    expected = np.repeat([i for i in range(24) if i != 11], [1 + i % 3 for i in range(24) if i != 11])
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(data[:, 0], index)  # every row labelled with the point that produced it


SCRIPT = '''
import sys
import h5py, numpy as np

outfile, i = sys.argv[1], int(float(sys.argv[2]))
if i == 11:
    sys.exit(3)
rows = np.array([[float(i), float(k), 0.5] for k in range(1 + i % 3)])
with h5py.File(outfile, "a") as fh:
    if "data" not in fh:
        fh.create_dataset("data", data=rows, maxshape=(None, 3))
    else:
        fh["data"].resize(fh["data"].shape[0] + len(rows), axis=0)
        fh["data"][-len(rows):] = rows
'''


def test_point_index_of_a_script_entry_with_variable_rows_per_point(mcc_home: Path, make_project) -> None:
    project = make_project(12, toml="max_attempts = 1\nchunk_size = 4\nworkers = 1\n")
    (project / "band.py").write_text(SCRIPT)
    (project / "mcc.toml").write_text((project / "mcc.toml").read_text().replace('"entry:compute"', '"band.py"'))
    proc = mcc("run", str(project), "--json", home=mcc_home)
    assert proc.returncode == EXIT_COMPLETED_WITH_FAILURES, proc.stderr
    (result,) = (project / "results").glob("*/combined.h5")
    with h5py.File(result, "r") as fh:
        index, data = fh["point_index"][...], fh["data"][...]
    np.testing.assert_array_equal(index, np.repeat(np.arange(11), [1 + i % 3 for i in range(11)]))
    np.testing.assert_array_equal(data[:, 0], index)
