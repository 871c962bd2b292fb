"""The same bands as bands.py, as a script in the original mCC convention.

    python bands_script.py OUTFILE kx ky kz

appends one row [kx, ky, kz, E-, E+] to the dataset `data` of the HDF5 file OUTFILE (created,
resizable, if absent). Needs only h5py; it does not import mcc.
"""
import cmath
import math
import sys

import h5py

T_EV = 2.7                                   # hopping energy, eV
A = 2.46                                     # lattice constant, angstrom
A1 = (A, 0.0)
A2 = (A / 2, A * math.sqrt(3) / 2)


def bands(kx, ky, kz):
    f = 1 + cmath.exp(1j * (kx * A1[0] + ky * A1[1])) + cmath.exp(1j * (kx * A2[0] + ky * A2[1]))
    energy = T_EV * abs(f)
    return [kx, ky, kz, -energy, energy]


def append_row(outfile, row):
    with h5py.File(outfile, "a") as f:
        if "data" not in f:
            f.create_dataset("data", shape=(0, 5), maxshape=(None, 5), dtype="float64",
                             chunks=True)
        dset = f["data"]
        n = dset.shape[0]
        dset.resize(n + 1, axis=0)
        dset[n, :] = row


def main(argv):
    if len(argv) != 5:
        sys.stderr.write("usage: python bands_script.py OUTFILE kx ky kz\n")
        return 2
    try:
        kx, ky, kz = (float(v) for v in argv[2:5])
    except ValueError:
        sys.stderr.write(f"bands_script.py: kx ky kz must be numbers, got {argv[2:5]}\n")
        return 2
    append_row(argv[1], bands(kx, ky, kz))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
