"""k-points over graphene's hexagonal Brillouin zone, in the original mCC convention.

get_points() returns a list of [kx, ky, kz] (1/angstrom): a 41 x 35 rectangular grid clipped to
the hexagon (boundary included, so Gamma and the K corner (4*pi/(3a), 0) are in the sweep),
repeated for three kz values — 3,129 points.
"""
import numpy as np

A = 2.46                                   # graphene lattice constant, angstrom
K_CORNER = 4 * np.pi / (3 * A)             # |Gamma-K|: the hexagon's corner radius
APOTHEM = np.sqrt(3) / 2 * K_CORNER        # |Gamma-M|: centre to edge midpoint


def in_brillouin_zone(kx, ky, tol=1e-9):
    """True inside (or on the edge of) the hexagon with corners at 0, 60, ..., 300 degrees."""
    inside = np.ones_like(kx, dtype=bool)
    for angle in (30.0, 90.0, 150.0):      # edge normals
        nx, ny = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        inside &= np.abs(kx * nx + ky * ny) <= APOTHEM * (1 + tol)
    return inside


def get_points():
    kx = np.linspace(-K_CORNER, K_CORNER, 41)
    ky = np.linspace(-APOTHEM, APOTHEM, 35)
    kz = np.arange(0, 0.051, 0.025)

    KX, KY, KZ = np.meshgrid(kx, ky, kz, indexing="ij")
    keep = in_brillouin_zone(KX, KY)

    return [[float(x), float(y), float(z)] for x, y, z in zip(KX[keep], KY[keep], KZ[keep])]


if __name__ == "__main__":
    points = get_points()
    print(f"{len(points)} k-points")
