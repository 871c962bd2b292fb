"""Leased work queue on Redis, shared by the laptop library and the manager/worker processes.

Subproblems are integers 0..N-1. Every mutation is one Lua script (atomic), every deadline
comes from Redis server time (``TIME`` inside Lua), never from a client clock. All keys live
under ``mcc:{run_id}:``; the braces put them in one Redis Cluster hash slot.

Keys: ``pending`` LIST (lazy deletion: done/dead/leased ids popped by claim are skipped),
``leased`` ZSET id->deadline_ms, ``owner`` HASH id->worker, ``attempts`` HASH, ``done`` SET,
``dead`` SET, ``errors`` HASH id->last reason, ``sizes`` HASH id->points, ``progress`` HASH,
``workers`` HASH worker->last heartbeat (s), ``events`` STREAM, ``seeded`` STRING, ``meta`` HASH,
``partial`` HASH id->comma-separated points that id's winning ack left out, ``result`` HASH id->key of
the batch object its winning ack carried (:mod:`mcc.work.pack`).

The unit of failure is the point. A chunk whose points partly fail is acked with the rows of the
others (``ack_partial``), and each failed point ``p`` goes on as a one-point subproblem of its own,
id ``base + p`` (``base`` = the number of chunks), born with one attempt spent: it
is retried (``fail``) until it is done or dead like any subproblem. Ids are deterministic, so a
queue rebuilt from the bucket names the same point-subproblems (see :func:`point_subproblem`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

from mcc.work import queue_scripts as lua

__all__ = ["Progress", "Queue", "EVENT_TYPES", "REASON_MAX_CHARS", "SLOT_SEP", "instance_of", "point_subproblem",
           "points_of"]

EVENT_TYPES = ("claimed", "acked", "failed", "expired", "preempted", "spawned")
REASON_MAX_CHARS = 2000
_CHUNK = 10_000

SLOT_SEP = "#"  # a worker process of a slotted instance is "<instance id>#<slot>" (remote/instance.py)


def instance_of(worker: str) -> str:
    """The instance (or process) a worker id belongs to: ``i-0ab#2`` → ``i-0ab``."""
    return worker.split(SLOT_SEP, 1)[0]


def point_subproblem(point: int, base: int) -> int:
    """The id of the one-point subproblem of ``point`` in a run of ``base`` chunks."""
    return base + int(point)


def points_of(sub: int, chunks: Sequence[tuple[int, int]], base: int | None = None) -> range:
    """The point indexes subproblem ``sub`` computes: its chunk's, or the one point of a point-subproblem."""
    base = len(chunks) if base is None else base
    if sub >= base:
        return range(sub - base, sub - base + 1)
    first, n = chunks[sub]
    return range(first, first + n)


def _s(value: Any) -> str:
    """Decode a Redis reply (bytes or str) to str."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _lease_ms(lease_seconds: float) -> int:
    ms = int(round(lease_seconds * 1000))
    if ms <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    return ms


@dataclass(frozen=True)
class Progress:
    """Snapshot of a run's counters."""

    total: int
    total_points: int
    done: int
    done_points: int
    dead: int
    dead_points: int
    leased: int
    failures: int
    preemptions: int

    @property
    def finished(self) -> bool:
        """True once every subproblem is done or dead."""
        return self.total > 0 and self.done + self.dead == self.total

    @property
    def pending(self) -> int:
        """Subproblems neither done, dead nor leased."""
        return max(0, self.total - self.done - self.dead - self.leased)

    def to_dict(self) -> dict:
        """All fields plus ``pending`` and ``finished``."""
        return {**asdict(self), "pending": self.pending, "finished": self.finished}


class Queue:
    """Leased work queue of one run, keyed under ``mcc:{run_id}:``."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.prefix = f"mcc:{{{run_id}}}:"
        self.keys = {name: self.prefix + name for name in lua.KEY_NAMES + ("seeded", "withheld")}
        self._script_keys = [self.keys[name] for name in lua.KEY_NAMES]
        self._claim = client.register_script(lua.PRELUDE + lua.CLAIM)
        self._ack_claim = client.register_script(lua.PRELUDE + lua.ACK_CLAIM)
        self._heartbeat = client.register_script(lua.PRELUDE + lua.HEARTBEAT)
        self._ack = client.register_script(lua.PRELUDE + lua.ACK)
        self._fail = client.register_script(lua.PRELUDE + lua.FAIL)
        self._preempt = client.register_script(lua.PRELUDE + lua.PREEMPT)
        self._requeue = client.register_script(lua.PRELUDE + lua.REQUEUE)
        self._ack_partial = client.register_script(lua.PRELUDE + lua.ACK_PARTIAL)
        self._settled = client.register_script(lua.PRELUDE + lua.SETTLED)

    def _run(self, script: Any, *args: Any) -> Any:
        return script(keys=self._script_keys, args=list(args))

    # ---- seeding ---------------------------------------------------------------------
    def seed(self, sizes: Sequence[int], max_attempts: int, *, done: Iterable[int] = (),
             dead: Iterable[int] = (), attempts: Mapping[int, int] | None = None,
             partial: Mapping[int, Sequence[int]] | None = None, results: Mapping[int, str] | None = None) -> bool:
        """Seed the run once (one MULTI/EXEC guarded by WATCH); False if already seeded.

        ``sizes`` are the chunks' (ids 0..N-1). ``partial`` (a rebuild from the bucket) maps a done
        chunk to the points its result left out: each becomes the one-point subproblem N + point,
        which ``done``, ``dead`` and ``attempts`` may name like any other id. ``results`` maps done ids
        to the object holding each one's result (:meth:`result_keys`).
        """
        sizes = [int(s) for s in sizes]
        base = len(sizes)
        partial = {int(s): sorted(int(p) for p in pts) for s, pts in (partial or {}).items() if pts}
        extra: dict[int, int] = {}  # point-subproblem id -> size 1
        for sub, pts in partial.items():
            if not 0 <= sub < base:
                raise ValueError(f"partial subproblem {sub} out of range 0..{base - 1}")
            sizes[sub] -= len(pts)
            extra.update((base + p, 1) for p in pts)
        ids = range(base)
        n = base
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if any(s < 0 for s in sizes):
            raise ValueError("sizes must be non-negative")
        done_set, dead_set = {int(i) for i in done}, {int(i) for i in dead}
        dead_set -= done_set  # a result on disk wins over an earlier death
        attempts = {int(k): int(v) for k, v in (attempts or {}).items() if int(v) > 0}
        for i in done_set | dead_set | attempts.keys():
            if not 0 <= i < n and i not in extra:
                raise ValueError(f"subproblem {i} out of range 0..{n - 1}")
        size_of = {**dict(enumerate(sizes)), **extra}
        every = [*ids, *sorted(extra)]
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(k["seeded"])
                if pipe.exists(k["seeded"]):
                    return False
                pipe.multi()
                pipe.delete(*(k[name] for name in lua.KEY_NAMES if name not in ("workers", "events")))
                items = list(size_of.items())
                for c in range(0, len(items), _CHUNK):
                    pipe.hset(k["sizes"], mapping=dict(items[c:c + _CHUNK]))
                for key, ids in (("done", sorted(done_set)), ("dead", sorted(dead_set))):
                    for c in range(0, len(ids), _CHUNK):
                        pipe.sadd(k[key], *ids[c:c + _CHUNK])
                att = list(attempts.items())
                for c in range(0, len(att), _CHUNK):
                    pipe.hset(k["attempts"], mapping=dict(att[c:c + _CHUNK]))
                if partial:
                    pipe.hset(k["partial"], mapping={s: ",".join(map(str, pts)) for s, pts in partial.items()})
                res = [(int(s), key) for s, key in (results or {}).items() if int(s) in done_set]
                for c in range(0, len(res), _CHUNK):
                    pipe.hset(k["result"], mapping=dict(res[c:c + _CHUNK]))
                pipe.hset(k["progress"], mapping={
                    "total": len(every), "total_points": sum(size_of.values()),
                    "done": len(done_set), "done_points": sum(size_of[i] for i in done_set),
                    "dead": len(dead_set), "dead_points": sum(size_of[i] for i in dead_set),
                    "failures": 0, "preemptions": 0, "expirations": 0})
                live = [i for i in every if i not in done_set and i not in dead_set]
                for c in range(0, len(live), _CHUNK):
                    pipe.rpush(k["pending"], *live[c:c + _CHUNK])
                pipe.hset(k["meta"], mapping={"max_attempts": int(max_attempts)})
                pipe.set(k["seeded"], 1)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def is_seeded(self) -> bool:
        """True once seed() has committed."""
        return bool(self.client.exists(self.keys["seeded"]))

    # ---- worker side -----------------------------------------------------------------
    def claim(self, worker: str, n: int, lease_seconds: float) -> list[int]:
        """Lease up to ``n`` subproblems to ``worker``; records its heartbeat."""
        if n <= 0:
            return []
        return [int(x) for x in self._run(self._claim, worker, int(n), _lease_ms(lease_seconds))]

    def heartbeat(self, worker: str, ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases ``worker`` still owns (even overdue ones); return lost ids."""
        out = self._run(self._heartbeat, worker, _lease_ms(lease_seconds), *(int(i) for i in ids))
        return [int(x) for x in out]

    def ack(self, worker: str, sub: int, key: str | None = None) -> bool:
        """Mark ``sub`` done (first ack from any worker wins) with its result in the object ``key``
        (recorded by the winning ack only: see :meth:`result_keys`); False if already done/dead."""
        return bool(self._run(self._ack, worker, int(sub), key or ""))

    def ack_many(self, worker: str, subs: Sequence[int], key: str | None = None) -> list[bool]:
        """``ack`` of each of ``subs`` (their results all in ``key``), in one round trip: one bool per sub."""
        return self.ack_and_claim(worker, subs, 0, 1.0, key=key)[0]

    def ack_and_claim(self, worker: str, acks: Sequence[int], n: int,
                      lease_seconds: float, key: str | None = None) -> tuple[list[bool], list[int]]:
        """``ack_many(worker, acks, key)`` then, if ``n`` > 0, ``claim(worker, n, lease_seconds)``, atomically
        and in one round trip: a worker's whole exchange with the queue per batch of subproblems.

        The claim leases at most a fair share of the pending list (its length over the number of
        workers in the heartbeat table, rounded up; at least 1), so batches shrink at the end of a run.
        """
        acked, claimed = self._run(self._ack_claim, worker, max(int(n), 0), _lease_ms(lease_seconds),
                                   len(acks), key or "", *(int(i) for i in acks))
        return [bool(x) for x in acked], [int(x) for x in claimed]

    def fail(self, worker: str, sub: int, reason: str) -> str:
        """Spend an attempt of a lease ``worker`` owns: "retry", "dead", or "stale"."""
        return _s(self._run(self._fail, worker, int(sub), str(reason)[:REASON_MAX_CHARS]))

    def ack_partial(self, worker: str, sub: int, failed: Mapping[int, str], base: int,
                    key: str | None = None) -> dict[int, str]:
        """Ack chunk ``sub`` with the rows of all its points but ``failed`` (point -> reason), which
        go on as one-point subproblems (:func:`point_subproblem`: ``base`` + point, ``base`` being the
        number of chunks) with one attempt spent.

        First ack wins, as for ``ack``: a chunk already done or dead changes nothing and gives {}.
        Else {point-subproblem id: "retry" | "dead"} for each point newly split off.
        """
        args: list[Any] = []
        for point, reason in sorted(failed.items()):
            args += [int(point), str(reason)[:REASON_MAX_CHARS]]
        out = self._run(self._ack_partial, worker, int(sub), int(base), key or "", *args)
        return {int(out[i]): _s(out[i + 1]) for i in range(0, len(out), 2)}

    def preempt(self, worker: str, ids: Sequence[int]) -> list[int]:
        """Requeue owned leases at the front without spending an attempt; return them."""
        if not ids:
            return []
        return [int(x) for x in self._run(self._preempt, worker, *(int(i) for i in ids))]

    # ---- manager side ----------------------------------------------------------------
    def requeue_expired(self, limit: int = 1000) -> list[tuple[int, str]]:
        """Expire overdue leases (spends an attempt): [(id, "retry"|"dead"), ...]."""
        if limit <= 0:
            return []
        out = self._run(self._requeue, int(limit))
        return [(int(out[i]), _s(out[i + 1])) for i in range(0, len(out), 2)]

    def progress(self) -> Progress:
        """Consistent snapshot of the counters."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys["progress"])
            pipe.zcard(self.keys["leased"])
            raw, leased = pipe.execute()
        c = {_s(key): int(v) for key, v in raw.items()}
        return Progress(
            total=c.get("total", 0), total_points=c.get("total_points", 0),
            done=c.get("done", 0), done_points=c.get("done_points", 0),
            dead=c.get("dead", 0), dead_points=c.get("dead_points", 0),
            leased=int(leased), failures=c.get("failures", 0),
            preemptions=c.get("preemptions", 0))

    def worker_heartbeats(self) -> dict[str, float]:
        """worker -> last heartbeat (server time, seconds)."""
        return {_s(w): float(t) for w, t in self.client.hgetall(self.keys["workers"]).items()}

    def instance_heartbeats(self) -> dict[str, float]:
        """instance -> the latest heartbeat of any of its worker processes (see :func:`instance_of`)."""
        out: dict[str, float] = {}
        for worker, t in self.worker_heartbeats().items():
            key = instance_of(worker)
            out[key] = max(t, out.get(key, t))
        return out

    def forget_worker(self, worker: str) -> None:
        """Drop a worker (and the worker processes of its slots) from the heartbeat table."""
        slots = [w for w in self.client.hkeys(self.keys["workers"]) if instance_of(_s(w)) == worker]
        self.client.hdel(self.keys["workers"], worker, *slots)

    def server_time(self) -> float:
        """Redis server time in seconds."""
        sec, usec = self.client.time()
        return int(sec) + int(usec) / 1e6

    def attempts(self, sub: int) -> int:
        """Attempts spent on ``sub`` so far."""
        return int(self.client.hget(self.keys["attempts"], int(sub)) or 0)

    def errors(self) -> dict[int, str]:
        """Last failure reason per subproblem that ever failed."""
        return {int(k): _s(v) for k, v in self.client.hgetall(self.keys["errors"]).items()}

    def partial(self) -> dict[int, list[int]]:
        """Done chunk -> the points its winning (partial) ack left out, for every such chunk."""
        return {int(k): [int(p) for p in _s(v).split(",") if p]
                for k, v in self.client.hgetall(self.keys["partial"]).items()}

    def dead_points(self, chunks: Sequence[tuple[int, int]]) -> dict[int, str]:
        """Every dead point of the run -> its last error: THE place to ask which points are missing.

        A dead point is either a one-point subproblem that spent its attempts, or a point of a chunk
        that died whole (its lease expired ``max_attempts`` times: the worker itself was lost).
        ``chunks`` is the run spec's ``(first point, n points)`` per chunk. The ledger's twin, for a
        run whose queue is gone, is ``mcc.ledger.queries.missing_points``.
        """
        errors = self.errors()
        base = len(chunks)
        out: dict[int, str] = {}
        for sub in self.dead_ids():
            for point in points_of(sub, chunks, base):
                out[point] = errors.get(sub, "")
        return dict(sorted(out.items()))

    def dead_ids(self) -> list[int]:
        """Sorted ids of dead subproblems."""
        return sorted(int(x) for x in self.client.smembers(self.keys["dead"]))

    def result_keys(self) -> dict[int, str]:
        """Done id -> key of the object holding its result (set by the first winning ack only)."""
        return {int(s): _s(key) for s, key in self.client.hgetall(self.keys["result"]).items()}

    def settled(self, ids: Sequence[int]) -> list[tuple[str, str | None, list[int] | None]]:
        """Per id, in one round trip: ("done", its result object, the points its ack left out or None),
        ("dead", None, None) or ("", None, None) while it is neither."""
        if not ids:
            return []
        raw = [_s(x) for x in self._run(self._settled, *(int(i) for i in ids))]
        return [(raw[k], raw[k + 1] or None, [int(p) for p in raw[k + 2].split(",")] if raw[k + 2] else None)
                for k in range(0, len(raw), 3)]

    def done_ids(self) -> list[int]:
        """Sorted ids of done subproblems."""
        return sorted(int(x) for x in self.client.smembers(self.keys["done"]))

    def read_events(self, after: str = "0-0",
                    count: int = 10000) -> list[tuple[str, dict[str, str]]]:
        """Events with stream id strictly greater than ``after``, oldest first."""
        rows = self.client.xrange(self.keys["events"], min=f"({after}", max="+", count=count)
        return [(_s(eid), {_s(k): _s(v) for k, v in fields.items()}) for eid, fields in rows]

    def trim_events(self, upto: str) -> None:
        """Drop events with id lower than ``upto`` (XTRIM MINID; ``upto`` itself is kept)."""
        self.client.xtrim(self.keys["events"], minid=upto, approximate=False)

    # ---- a budget drain: no new leases, held ones go on ----------------------------------
    def withhold(self) -> int:
        """Move the pending list aside (key ``withheld``) so nothing new is leased; held leases go on and a
        requeued one is moved aside by the next call. Returns how many ids moved."""
        return int(self.client.eval(lua.MOVE_ALL, 2, self.keys["pending"], self.keys["withheld"], "LEFT", "RIGHT"))

    def lease_only_under_manager(self) -> None:
        """From now on a claim leases nothing while no manager holds the run's lock (key ``manager_lock``,
        renewed every tick): workers left without a manager go idle and exit instead of computing on
        unsupervised. A run with a budget asks for it, so its spend stays bounded with its manager gone."""
        self.client.hset(self.keys["meta"], "supervised", "1")

    def restore_withheld(self) -> int:
        """Put what :meth:`withhold` set aside back at the front of the pending list, in order."""
        return int(self.client.eval(lua.MOVE_ALL, 2, self.keys["withheld"], self.keys["pending"], "RIGHT", "LEFT"))

    def delete(self) -> None:
        """Remove every key of this run (SCAN, never KEYS)."""
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self.prefix) + "*"
        batch: list[Any] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)
