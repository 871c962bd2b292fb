"""Tests of mcc.work.queue against a real redis-server (no mocks)."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mcc.errors import ProviderError
from mcc.providers.base import TAG_LEDGER
from mcc.providers.local import processes
from mcc.providers.local.cache import find_redis_server, new_password, start_redis
from mcc.work.queue import Progress, Queue
from tests.conftest import wait_for


def run_threads(target, n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A password-protected redis-server on loopback, started as the local backend starts its queue
    (the benchmarks' ``bench.harness.redis_server`` uses the same ``start_redis``)."""
    try:
        find_redis_server()
    except ProviderError as exc:
        pytest.skip(str(exc))
    password = new_password()
    workdir = tmp_path_factory.mktemp("redis")
    proc, port = start_redis(password, workdir, {TAG_LEDGER: f"test-queue-{uuid.uuid4().hex[:12]}"},
                             workdir / "redis.log")
    client = redis.Redis("127.0.0.1", port, password=password)
    try:
        yield {"client": client, "port": port, "password": password}
    finally:
        client.close()
        processes.terminate(proc, grace=10.0)


@pytest.fixture
def client(server):
    return server["client"]


@pytest.fixture
def q(client):
    queue = Queue(client, uuid.uuid4().hex)
    yield queue
    queue.delete()


def test_seed_once(q, client):
    for bad in ({"sizes": [1, 2], "max_attempts": 3, "done": [5]},
                {"sizes": [1], "max_attempts": 0}):
        with pytest.raises(ValueError):
            q.seed(**bad)
    assert not q.is_seeded()
    assert q.seed([1, 2, 3], 3) is True
    assert q.is_seeded()
    assert q.seed([5] * 10, 1) is False
    p = q.progress()
    assert (p.total, p.total_points) == (3, 6)
    assert client.hget(q.keys["meta"], "max_attempts") == b"3"


def test_concurrent_seed_exactly_once(client):
    for _ in range(5):
        run = uuid.uuid4().hex
        barrier, results = threading.Barrier(4), []

        def go():
            barrier.wait(timeout=60)
            results.append(Queue(client, run).seed([1] * 5000, 3))

        run_threads(go, 4)
        qq = Queue(client, run)
        assert sorted(results) == [False, False, False, True]
        assert client.llen(qq.keys["pending"]) == 5000
        qq.delete()


def test_seed_rebuild_with_done_dead_attempts(q):
    assert q.seed([1, 2, 3, 4, 5, 6], 3, done=[0, 2], dead=[4], attempts={1: 2, 4: 3})
    p = q.progress()
    assert (p.done, p.done_points, p.dead, p.dead_points) == (2, 4, 1, 5)
    assert p.pending == 3 and not p.finished
    assert q.done_ids() == [0, 2] and q.dead_ids() == [4]
    assert q.attempts(1) == 2 and q.attempts(3) == 0
    assert q.claim("w", 10, 30) == [1, 3, 5]
    claimed = {int(f["sub"]): f for _, f in q.read_events() if f["type"] == "claimed"}
    assert claimed[1]["attempt"] == "3" and claimed[3]["attempt"] == "1"


def test_claim_order_skips_done_and_empty(q):
    assert q.claim("w", 5, 30) == []  # not seeded
    q.seed([1] * 10, 3)
    assert q.claim("a", 3, 30) == [0, 1, 2]
    assert q.ack("x", 3) and q.ack("x", 4)  # done while still in pending: lazily skipped
    assert q.claim("b", 3, 30) == [5, 6, 7]
    assert q.claim("b", 10, 30) == [8, 9]
    assert q.claim("b", 10, 30) == []
    assert set(q.worker_heartbeats()) == {"w", "a", "b"}
    assert abs(q.worker_heartbeats()["b"] - q.server_time()) < 5
    q.forget_worker("w")
    assert "w" not in q.worker_heartbeats()


def test_heartbeat_extends_and_reports_lost(q, client):
    q.seed([1] * 4, 3)
    assert q.claim("a", 2, 1) == [0, 1]
    before = client.zscore(q.keys["leased"], 0)
    assert before == pytest.approx(q.server_time() * 1000 + 1000, abs=2000)
    assert q.claim("b", 1, 30) == [2]
    assert q.ack("a", 1)
    assert q.heartbeat("a", [0, 1, 2, 3], 100) == [1, 2, 3]
    assert client.zscore(q.keys["leased"], 0) >= before + 98_000
    assert client.zscore(q.keys["leased"], 1) is None  # XX: never re-creates a lease


def test_lease_expiry_requeues_and_counts_attempt(q):
    q.seed([7, 8], 3)
    assert q.claim("a", 1, 0.2) == [0]
    assert q.requeue_expired() == []  # not yet expired
    assert wait_for(q.requeue_expired) == [(0, "retry")]
    assert q.attempts(0) == 1 and q.errors() == {0: "lease expired"}
    p = q.progress()
    assert (p.failures, p.leased) == (1, 0)
    assert q.claim("b", 2, 30) == [1, 0]  # retry goes to the back
    ev = [f for _, f in q.read_events() if f["type"] == "expired"]
    assert ev == [{"type": "expired", "sub": "0", "worker": "a", "t": ev[0]["t"],
                   "outcome": "retry", "attempt": "1", "reason": "lease expired"}]


def test_requeue_expired_concurrently_once(q):
    q.seed([1] * 50, 3)
    q.claim("a", 50, 0.1)
    last = q.client.zrange(q.keys["leased"], -1, -1, withscores=True)[0][1]
    wait_for(lambda: q.server_time() * 1000 > last)
    out, barrier = [], threading.Barrier(4)

    def go():
        barrier.wait(timeout=60)
        out.extend(q.requeue_expired(limit=7))
        while batch := q.requeue_expired(limit=7):
            out.extend(batch)

    run_threads(go, 4)
    assert sorted(out) == [(i, "retry") for i in range(50)]
    assert q.progress().failures == 50


def test_retries_then_dead(q):
    q.seed([5, 6], 2)
    assert q.claim("a", 1, 30) == [0]
    assert q.fail("a", 0, "boom 1") == "retry"
    assert q.claim("a", 1, 30) == [1]
    assert q.claim("a", 1, 30) == [0]
    assert q.fail("a", 0, "boom 2") == "dead"
    assert q.dead_ids() == [0] and q.errors() == {0: "boom 2"}
    assert q.ack("a", 0) is False  # dead stays dead
    assert q.claim("a", 5, 30) == []
    assert q.ack("a", 1)
    p = q.progress()
    assert (p.dead, p.dead_points, p.done, p.done_points, p.failures) == (1, 5, 1, 6, 2)
    assert p.finished and p.pending == 0


def test_idempotent_ack(q):
    q.seed([3, 4], 3)
    q.claim("a", 1, 30)
    assert q.ack("a", 0) is True
    before = q.progress()
    assert q.ack("a", 0) is False and q.ack("b", 0) is False
    assert q.progress() == before and before.done_points == 3
    assert q.ack("a", 99) is False  # unknown subproblem
    assert len([1 for _, f in q.read_events() if f["type"] == "acked"]) == 1


def test_stale_ack_after_requeue(q):
    q.seed([1], 3)
    assert q.claim("A", 1, 0.2) == [0]
    wait_for(q.requeue_expired)
    assert q.claim("B", 1, 30) == [0]
    assert q.ack("A", 0, key="results/A-1.pack") is True  # first ack wins, and its object is the one read
    assert q.done_ids() == [0] and q.progress().leased == 0
    assert q.ack("B", 0, key="results/B-1.pack") is False
    assert q.result_keys() == {0: "results/A-1.pack"}
    assert q.fail("B", 0, "x") == "stale"
    assert q.heartbeat("B", [0], 30) == [0]
    assert q.progress().finished


def test_fail_from_non_owner_is_stale(q):
    q.seed([1, 1], 3)
    q.claim("a", 1, 30)
    assert q.fail("b", 0, "nope") == "stale"
    assert q.fail("b", 1, "nope") == "stale"  # pending, not leased
    assert q.attempts(0) == 0 and q.errors() == {}
    assert q.progress().leased == 1 and q.progress().failures == 0


def test_preempt_to_front_no_attempt(q):
    q.seed([1] * 6, 3)
    assert q.claim("a", 3, 30) == [0, 1, 2]
    assert q.claim("b", 1, 30) == [3]
    assert q.preempt("a", [1, 2, 3, 99]) == [1, 2]
    assert q.attempts(1) == 0 and q.attempts(2) == 0
    assert q.claim("c", 3, 30) == [1, 2, 4]
    p = q.progress()
    assert (p.preemptions, p.failures, p.leased) == (2, 0, 5)
    assert q.preempt("a", []) == []


def test_progress_counters_and_points(q):
    q.seed([10, 20, 30, 40], 1)
    assert q.progress() == Progress(4, 100, 0, 0, 0, 0, 0, 0, 0)
    q.claim("w", 3, 30)
    q.ack("w", 0)
    assert q.fail("w", 1, "e" * 5000) == "dead"
    assert len(q.errors()[1]) == 2000
    p = q.progress()
    d = p.to_dict()
    assert d == {"total": 4, "total_points": 100, "done": 1, "done_points": 10, "dead": 1,
                 "dead_points": 20, "leased": 1, "failures": 1, "preemptions": 0,
                 "pending": 1, "finished": False}


def test_events_content_and_trim(q):
    q.seed([1, 1, 1], 3)
    q.claim("w", 3, 30)
    q.ack("w", 0)
    q.fail("w", 1, "bad")
    q.preempt("w", [2])
    events = q.read_events()
    assert [(f["type"], f["sub"], f["worker"]) for _, f in events] == [
        ("claimed", "0", "w"), ("claimed", "1", "w"), ("claimed", "2", "w"),
        ("acked", "0", "w"), ("failed", "1", "w"), ("preempted", "2", "w")]
    assert all(abs(float(f["t"]) - q.server_time()) < 5 for _, f in events)
    assert {k: events[4][1][k] for k in ("outcome", "attempt", "reason")} == \
        {"outcome": "retry", "attempt": "1", "reason": "bad"}
    assert q.read_events(after=events[3][0]) == events[4:]
    assert q.read_events(count=2) == events[:2]
    q.trim_events(events[4][0])
    assert q.read_events() == events[4:]


def test_delete_removes_every_key(client):
    q, other = Queue(client, "x*"), Queue(client, "xy")
    for queue in (q, other):
        queue.seed([1, 2, 3], 1)
        queue.claim("w", 2, 30)
        queue.fail("w", 1, "r")
        queue.ack("w", 0)
    q.delete()
    assert list(client.scan_iter(match="mcc:{x\\*}:*")) == []
    assert len(list(client.scan_iter(match="mcc:{xy}:*"))) >= 10
    other.delete()
    assert list(client.scan_iter(match="mcc:{xy}:*")) == []


def test_large_seed_and_batched_claims(q, client):
    n = 100_000
    assert q.seed([2] * n, 3, done=range(0, 10))
    got = []
    for _ in range(10):
        got += q.claim("w", 100, 60)
    assert got == list(range(10, 1010))
    p = q.progress()
    assert (p.total, p.total_points, p.done, p.leased, p.pending) == (n, 2 * n, 10, 1000, n - 1010)
    assert client.llen(q.keys["pending"]) == n - 1010


def test_decode_responses_client(server):
    c = redis.Redis("127.0.0.1", server["port"], password=server["password"], decode_responses=True)
    q = Queue(c, uuid.uuid4().hex)
    try:
        q.seed([4, 5], 1)
        assert q.claim("w", 2, 30) == [0, 1]
        assert q.fail("w", 1, "x") == "dead"
        assert q.progress().dead_points == 5 and q.errors() == {1: "x"}
        assert [f["type"] for _, f in q.read_events()][-1] == "failed"
        assert isinstance(q.worker_heartbeats()["w"], float)
    finally:
        q.delete()
        c.close()


def test_password_required(server):
    for kwargs in ({}, {"password": "wrong"}):
        c = redis.Redis("127.0.0.1", server["port"], retry=Retry(NoBackoff(), 0), **kwargs)
        with pytest.raises(redis.AuthenticationError):
            c.ping()
        c.close()


CHUNKS = [(0, 5), (5, 5), (10, 2)]  # points 0..11 in three chunks: point-subproblems are 3 + point


def test_partial_ack_splits_failed_points_into_their_own_subproblems(q):
    q.seed([n for _, n in CHUNKS], 2)
    assert q.claim("a", 3, 30) == [0, 1, 2]
    assert q.ack_partial("a", 1, {6: "point 6: boom", 8: "point 8: bang"}, 3) == {9: "retry", 11: "retry"}
    assert q.ack_partial("b", 1, {7: "late"}, 3) == {}  # first ack wins: a second attempt changes nothing
    assert q.ack_many("a", [0, 2]) == [True, True]
    p = q.progress()
    assert (p.total, p.total_points, p.done, p.done_points, p.failures) == (5, 12, 3, 10, 2)
    assert q.partial() == {1: [6, 8]} and q.attempts(9) == 1 and q.errors()[11] == "point 8: bang"
    assert q.claim("c", 5, 30) == [9, 11]  # the failed points, alone, one attempt already spent
    assert q.fail("c", 9, "point 6: boom again") == "dead"
    assert q.ack("c", 11)
    p = q.progress()
    assert (p.done, p.done_points, p.dead, p.dead_points) == (4, 11, 1, 1) and p.finished
    assert q.dead_points(CHUNKS) == {6: "point 6: boom again"}
    spawned = [f for _, f in q.read_events() if f["type"] == "spawned"]
    assert [(f["sub"], f["point"], f["parent"], f["outcome"]) for f in spawned] == [("9", "6", "1", "retry"),
                                                                                 ("11", "8", "1", "retry")]


def test_partial_ack_with_one_attempt_kills_the_point_at_once_and_dead_chunks_list_every_point(q):
    q.seed([n for _, n in CHUNKS], 1)
    assert q.claim("a", 3, 30) == [0, 1, 2]
    assert q.ack_partial("a", 0, {3: "point 3: x"}, 3) == {6: "dead"}
    assert q.fail("a", 2, "lease-like loss of the whole chunk") == "dead"
    assert q.ack("a", 1)
    p = q.progress()
    assert p.finished and (p.dead, p.dead_points, p.done_points) == (2, 3, 9)
    assert q.dead_points(CHUNKS) == {3: "point 3: x", 10: "lease-like loss of the whole chunk",
                                     11: "lease-like loss of the whole chunk"}


def test_seed_rebuilds_point_subproblems_of_partial_chunks(q):
    # as a new manager rebuilds a lost queue: chunk 1 done without points 6 and 8; 6 recomputed since, 8 dead
    assert q.seed([n for _, n in CHUNKS], 2, done={1, 9}, dead={11}, attempts={9: 1, 11: 2}, partial={1: [6, 8]})
    p = q.progress()
    assert (p.total, p.total_points, p.done, p.done_points, p.dead, p.dead_points) == (5, 12, 2, 4, 1, 1)
    assert q.partial() == {1: [6, 8]}
    assert q.claim("w", 10, 30) == [0, 2]
    assert q.dead_points(CHUNKS) == {8: ""}


def test_the_first_winning_ack_records_its_object_for_each_sub(q):
    """sub -> object key: set by the winning ack of each sub (batched, partial or alone), never moved by a later one."""
    q.seed([n for _, n in CHUNKS], 3)
    assert q.claim("a", 2, 30) == [0, 1]
    assert q.ack_and_claim("a", [0, 1], 1, 30, key="results/a-x-000000.pack") == ([True, True], [2])
    assert q.claim("b", 1, 30) == []  # nothing pending: b computes 1 again only after a lease is lost
    assert q.ack_many("b", [1, 2], key="results/b-y-000000.pack") == [False, True]
    assert q.ack_many("c", [2], key="results/c-z-000000.pack") == [False]
    assert q.result_keys() == {0: "results/a-x-000000.pack", 1: "results/a-x-000000.pack",
                               2: "results/b-y-000000.pack"}


def test_seed_records_the_rebuilt_objects_of_done_subproblems_only(q):
    assert q.seed([4, 4, 4], 2, done={0, 2}, results={0: "results/a.pack", 1: "results/not-done.pack",
                                                      2: "results/b.pack"})
    assert q.result_keys() == {0: "results/a.pack", 2: "results/b.pack"}


def test_slot_workers_count_for_their_instance(q):
    """The worker processes of a slotted instance ("i-1#1", "i-1#2") beat for their instance, and forgetting
    the instance forgets every one of them (and no other worker)."""
    q.seed([1, 1, 1], max_attempts=3)
    for worker in ("i-1#1", "i-1#2", "i-2"):
        (sub,) = q.claim(worker, 1, lease_seconds=30)
        q.heartbeat(worker, [sub], lease_seconds=30)
    beats = q.worker_heartbeats()
    assert set(q.instance_heartbeats()) == {"i-1", "i-2"}
    assert q.instance_heartbeats()["i-1"] == max(beats["i-1#1"], beats["i-1#2"])
    q.forget_worker("i-1")
    assert set(q.worker_heartbeats()) == {"i-2"}
