"""The sweep: get_points() returns the list of points; each point is a list of numbers.

mcc calls get_points() once, splits the points into chunks and runs your entry point on each.
This example is a 1-D strain sweep: 51 strains from -5 % to +5 %.
"""
import numpy as np


def get_points():
    strains = np.linspace(-0.05, 0.05, 51)
    return [[float(s)] for s in strains]


if __name__ == "__main__":
    points = get_points()
    print(f"{len(points)} points, first {points[0]}, last {points[-1]}")
