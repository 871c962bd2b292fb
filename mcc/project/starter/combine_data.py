"""Optional: combine_data(files, fileout) merges the partial result files into one HDF5 file.

mcc calls it once, at the end of the run, with the partial files in subproblem order (each holds the
rows your entry returned in its dataset `data`) and the path to write. Delete this file to use the
built-in combiner, which concatenates the `data` datasets just like the code below, minus the labels.
The original materialsCloudCompute's combine_data.py works here unchanged.
"""
import h5py
import numpy as np

COLUMNS = ["strain", "energy_eV_per_atom", "pressure_GPa"]   # what entry.compute returns, in order


def combine_data(files, fileout):
    parts = []
    for name in files:
        with h5py.File(name, "r") as f:
            parts.append(f["data"][...])
    rows = np.concatenate(parts) if parts else np.empty((0, len(COLUMNS)))
    rows = rows[np.argsort(rows[:, 0], kind="stable")]       # sorted by strain
    with h5py.File(fileout, "w") as f:
        dset = f.create_dataset("data", data=rows)
        dset.attrs["columns"] = COLUMNS                       # label the columns for whoever reads it
