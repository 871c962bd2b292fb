"""A new manager that finds the queue gone rebuilds it from the bucket's batch objects, partial chunks included."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from mcc.work.queue import Queue
from mcc.remote.results import write_partial
from mcc.remote.combining import RunResults
from mcc.remote.manager import Manager
from mcc.remote.runtime import Runtime
from mcc.remote.worker import _write_result
from mcc.work import pack
from mcc.work.runspec import RunSpec, failure_key, result_key
from mcc.work.stores import LocalStore
from tests.test_queue import client, server  # noqa: F401  (the real redis-server fixtures)

CHUNKS = [(0, 4), (4, 4), (8, 4)]  # point-subproblems are 3 + point


def _file(tmp: Path, name: str, points: list[int], first: int, n: int, missing: list[int] | None = None) -> Path:
    path = tmp / name
    data = np.array([[p, p * 2.0] for p in points])
    if missing is None:
        _write_result(path, data, first, n)
    else:
        write_partial(path, data if points else None, first, n, missing, [1] * len(points))
    return path


def put_pack(store: LocalStore, key: str, tmp: Path, files: list[tuple[int, list[int] | None, Path]]) -> None:
    """A batch object as a worker writes one: the files appended, the index sealed, moved into the bucket."""
    path = tmp / (key.replace("/", "_") + ".part")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"bytes of a member a killed child left half-written")
        placed = [(sub, None if m is None else tuple(m), *pack.append_file(fd, f)) for sub, m, f in files]
        pack.seal(fd, placed)
    finally:
        os.close(fd)
    store.put_file(key, path, move=True)


def _manager(spec: RunSpec, store: LocalStore, client, queue: Queue, tmp_path: Path) -> Manager:  # noqa: F811
    manager = Manager.__new__(Manager)  # only the rebuild: no fleet, no lock
    manager.rt = Runtime(spec, store, client, queue, tmp_path / "work")
    manager.q, manager.spec, manager.key = queue, spec, f"mcc:{{{spec.run_id}}}:"
    manager.log = __import__("logging").getLogger("test")
    manager.results = RunResults(manager.rt, manager.log)
    return manager


def test_rebuild_keeps_the_most_complete_partial_and_its_points(client, tmp_path: Path) -> None:  # noqa: F811
    spec = RunSpec(run_id=uuid.uuid4().hex, ledger_uuid="l", n_points=12, chunks=CHUNKS, entry_kind="function",
                   entry_target="entry:compute", project_dir=str(tmp_path), workers=1, max_attempts=2,
                   point_timeout=10, lease_seconds=5, has_combiner=False)
    store = LocalStore(tmp_path / "bucket")
    # chunk 1 computed twice: one attempt lost points 5 and 6, the other only 6 (the one to keep)
    put_pack(store, "results/w1-aa-000000.pack", tmp_path, [(0, None, _file(tmp_path, "a", [0, 1, 2, 3], 0, 4)),
                                                            (1, [5, 6], _file(tmp_path, "b", [4, 7], 4, 4, [5, 6]))])
    put_pack(store, "results/w2-bb-000000.pack", tmp_path, [(1, [6], _file(tmp_path, "c", [4, 5, 7], 4, 4, [6]))])
    store.put_bytes(failure_key(3 + 5, 1), b"point 5: x")  # 5's point-subproblem belongs to the other attempt
    store.put_bytes(failure_key(3 + 6, 1), b"point 6: y")
    store.put_bytes(failure_key(3 + 6, 2), b"point 6: y again")
    # chunk 2: every point lost but 9, which was computed alone since
    put_pack(store, "results/w2-bb-000001.pack", tmp_path,
             [(2, [8, 9, 10, 11], _file(tmp_path, "d", [], 8, 4, [8, 9, 10, 11]))])
    for p in (8, 9, 10, 11):
        store.put_bytes(failure_key(3 + p, 1), b"z")
    # point 9 computed alone since, twice (two workers): the first object by key order is read
    put_pack(store, "results/w3-cc-000000.pack", tmp_path, [(3 + 9, None, _file(tmp_path, "e", [9], 9, 1))])
    put_pack(store, "results/w1-aa-000001.pack", tmp_path, [(3 + 9, None, _file(tmp_path, "f", [9], 9, 1))])
    store.put_bytes("results/w4-dd-000000.pack", b"an object whose seal never came")  # skipped, with a warning
    queue = Queue(client, spec.run_id)
    try:
        _manager(spec, store, client, queue, tmp_path)._ensure_seeded()
        assert queue.partial() == {1: [6], 2: [8, 9, 10, 11]}
        assert queue.done_ids() == [0, 1, 2, 12]
        assert queue.result_keys() == {0: "results/w1-aa-000000.pack", 1: "results/w2-bb-000000.pack",
                                       2: "results/w2-bb-000001.pack", 12: "results/w1-aa-000001.pack"}
        assert queue.dead_ids() == [9]  # point 6: two failures recorded, max_attempts 2
        assert {s: queue.attempts(s) for s in (11, 13, 14)} == {11: 1, 13: 1, 14: 1}
        p = queue.progress()
        assert (p.total, p.total_points, p.done_points, p.dead_points) == (3 + 5, 12, 4 + 3 + 1, 1)
        assert sorted(queue.claim("w", 10, 30)) == [11, 13, 14]  # points 8, 10, 11: still to compute
    finally:
        queue.delete()


def test_a_legacy_one_file_result_is_still_read(client, tmp_path: Path) -> None:  # noqa: F811
    """A run begun before batch objects (results/<sub>.h5) resumes: its files are one-member objects."""
    spec = RunSpec(run_id=uuid.uuid4().hex, ledger_uuid="l", n_points=12, chunks=CHUNKS, entry_kind="function",
                   entry_target="entry:compute", project_dir=str(tmp_path), workers=1, max_attempts=2,
                   point_timeout=10, lease_seconds=5, has_combiner=False)
    store = LocalStore(tmp_path / "bucket")
    store.put_file(result_key(2), _file(tmp_path, "old", [8, 9, 10, 11], 8, 4), move=True)
    put_pack(store, "results/w1-aa-000000.pack", tmp_path, [(0, None, _file(tmp_path, "a", [0, 1, 2, 3], 0, 4))])
    queue = Queue(client, spec.run_id)
    try:
        manager = _manager(spec, store, client, queue, tmp_path)
        manager._ensure_seeded()
        assert queue.done_ids() == [0, 2]
        assert queue.result_keys() == {0: "results/w1-aa-000000.pack", 2: result_key(2)}
        member = manager.results.member(2, None, queue.result_keys()[2])
        assert (member.sub, member.at, member.size) == (2, 0, os.path.getsize(member.path))
    finally:
        queue.delete()


def test_incremental_combine_appends_the_settled_front_and_equals_the_whole_combine(client, tmp_path: Path) -> None:  # noqa: F811
    """Chunks are appended in order once every chunk before them is settled; a dead one is skipped, a partial
    one waits for its split-off points; the finished file holds every point once, in point order."""
    import h5py

    from mcc.remote.combining import IncrementalCombine

    chunks = [(4 * c, 4) for c in range(6)]
    spec = RunSpec(run_id=uuid.uuid4().hex, ledger_uuid="l", n_points=24, chunks=chunks, entry_kind="function",
                   entry_target="entry:compute", project_dir=str(tmp_path), workers=1, max_attempts=2,
                   point_timeout=10, lease_seconds=30, has_combiner=False)
    store = LocalStore(tmp_path / "bucket")
    queue = Queue(client, spec.run_id)
    queue.seed([4] * 6, 2)
    files = {c: _file(tmp_path, f"c{c}", list(range(4 * c, 4 * c + 4)), 4 * c, 4) for c in range(6)}
    manager = _manager(spec, store, client, queue, tmp_path)
    inc = IncrementalCombine(manager.results, queue, tmp_path / "work" / "combined.h5.part")

    try:
        assert queue.claim("w", 6, 30) == [0, 1, 2, 3, 4, 5]
        put_pack(store, "results/w-a-000000.pack", tmp_path, [(1, None, files[1]), (2, None, files[2])])
        queue.ack_many("w", [1, 2], key="results/w-a-000000.pack")
        assert inc.step() == 0 and inc.appended == 0  # chunk 0 not done: nothing can be appended
        put_pack(store, "results/w-a-000001.pack", tmp_path, [(0, None, files[0])])
        queue.ack_many("w", [0], key="results/w-a-000001.pack")
        assert queue.fail("w", 3, "boom") == "retry"
        assert queue.claim("w", 1, 30) == [3] and queue.fail("w", 3, "boom") == "dead"
        # chunk 4: point 17 failed, split off as its own subproblem (6 + 17), not computed yet
        partial = _file(tmp_path, "p4", [16, 18, 19], 16, 4, [17])
        put_pack(store, "results/w-a-000002.pack", tmp_path, [(4, [17], partial)])
        queue.ack_partial("w", 4, {17: "point 17: x"}, 6, key="results/w-a-000002.pack")
        assert inc.step() == 4 and inc.appended == 3  # 0, 1, 2 appended, 3 dead; 4 waits for point 17
        put_pack(store, "results/w-a-000003.pack", tmp_path, [(6 + 17, None, _file(tmp_path, "p17", [17], 17, 1)),
                                                              (5, None, files[5])])
        assert sorted(queue.claim("w", 10, 30)) == [23]
        queue.ack_many("w", [23, 5], key="results/w-a-000003.pack")
        assert inc.step() == 2 and inc.appended == 5
        inc.finish()
        points = [*range(12), *range(16, 24)]  # chunk 3's points dead; point 17 merged back into chunk 4
        with h5py.File(inc.path, "r") as got:
            np.testing.assert_array_equal(got["data"][...], [[p, 2.0 * p] for p in points])
            assert got["point_index"][...].tolist() == points
    finally:
        inc.close()
        queue.delete()
