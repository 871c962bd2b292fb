"""A whole baseline job of B11 as its user would write it: ``python -m bench.whole_job pool|dask WORKLOAD N OUT``.

The points of ``bench.workloads`` computed by 2 worker processes (``multiprocessing.Pool(2).map`` with
its default chunking, or a dask.distributed ``LocalCluster`` of 2 processes × 1 thread, one task per
point), the results gathered, stacked and written as one HDF5 dataset ``data``. This module imports
only what such a script would (no mcc, no redis): its start-up is the baseline's own.
"""
from __future__ import annotations

import multiprocessing
import sys
from typing import Any, Callable

import h5py
import numpy as np

from bench import workloads

WORKERS = 2
FUNCTIONS: dict[str, Callable[[list[float]], Any]] = {"big": workloads.big_rows, "20ms": workloads.spin_20ms,
                                                      "w1": workloads.noop}


def job(tool: str, workload: str, n: int, out: str) -> None:
    fn = FUNCTIONS[workload]
    pts = workloads.points(n).tolist()
    if tool == "pool":
        with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
            results = pool.map(fn, pts)
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster, Client(cluster) as client:
            results = client.gather(client.map(fn, pts, pure=False))
    data = np.vstack([np.asarray(r, dtype=np.float64).reshape(-1, np.shape(r)[-1]) for r in results])
    with h5py.File(out, "w") as fh:
        fh.create_dataset("data", data=data)


if __name__ == "__main__":
    job(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
