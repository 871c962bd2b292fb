"""The entry point: compute(point) -> row, called once per point inside a worker process.

Return one row (a list of numbers) or several rows (a list of lists / a 2-D numpy array).
Put the point's coordinates first so the combined HDF5 file is self-describing.
Replace the toy model below with your calculation.
"""
import math

BULK_MODULUS_GPA = 160.0   # toy material parameters
VOLUME_A3 = 11.8           # volume per atom at zero strain, cubic angstrom
GPA_A3_TO_EV = 1.0 / 160.21766


def compute(point):
    """Energy per atom (eV) and pressure (GPa) under isotropic strain point[0]."""
    strain = float(point[0])
    volume_ratio = (1.0 + strain) ** 3
    log_ratio = math.log(volume_ratio)
    energy = 0.5 * BULK_MODULUS_GPA * VOLUME_A3 * log_ratio ** 2 * GPA_A3_TO_EV
    pressure = -BULK_MODULUS_GPA * log_ratio
    return [strain, energy, pressure]


if __name__ == "__main__":
    print(compute([0.01]))
