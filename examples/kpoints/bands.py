"""Nearest-neighbour tight-binding bands of graphene, as an in-process mcc function entry.

E(k) = +/- t * |1 + exp(i k.a1) + exp(i k.a2)|, t = 2.7 eV, a = 2.46 angstrom; kz is ignored.
"""
import cmath
import math

T_EV = 2.7                                   # hopping energy, eV
A = 2.46                                     # lattice constant, angstrom
A1 = (A, 0.0)                                # lattice vectors, angstrom
A2 = (A / 2, A * math.sqrt(3) / 2)


def bands(point):
    """One row [kx, ky, kz, E-, E+] (k in 1/angstrom, E in eV) for the k-point `point`."""
    kx, ky, kz = (float(v) for v in point[:3])
    f = 1 + cmath.exp(1j * (kx * A1[0] + ky * A1[1])) + cmath.exp(1j * (kx * A2[0] + ky * A2[1]))
    energy = T_EV * abs(f)
    return [kx, ky, kz, -energy, energy]
