"""Leased work queue on Redis, shared by the laptop library and the manager/worker processes.

Subproblems are integers 0..N-1. Every mutation is one Lua script (atomic), every deadline
comes from Redis server time (``TIME`` inside Lua), never from a client clock. All keys live
under ``mcc:{run_id}:``; the braces put them in one Redis Cluster hash slot.

Keys: ``pending`` LIST (lazy deletion: done/dead/leased ids popped by claim are skipped),
``leased`` ZSET id->deadline_ms, ``owner`` HASH id->worker, ``attempts`` HASH, ``done`` SET,
``dead`` SET, ``errors`` HASH id->last reason, ``sizes`` HASH id->points, ``progress`` HASH,
``workers`` HASH worker->last heartbeat (s), ``events`` STREAM, ``seeded`` STRING, ``meta`` HASH.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

__all__ = ["Progress", "Queue", "EVENT_TYPES", "REASON_MAX_CHARS"]

EVENT_TYPES = ("claimed", "acked", "failed", "expired", "preempted")
REASON_MAX_CHARS = 2000
EVENTS_MAXLEN = 1_000_000
_CHUNK = 10_000

# Order of KEYS passed to every script.
_KEY_NAMES = ("pending", "leased", "owner", "attempts", "done", "dead", "errors",
              "sizes", "progress", "workers", "events", "meta")

_PRELUDE = """
local K_PENDING, K_LEASED, K_OWNER, K_ATTEMPTS, K_DONE, K_DEAD, K_ERRORS,
      K_SIZES, K_PROGRESS, K_WORKERS, K_EVENTS, K_META = unpack(KEYS)
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. string.format('%06d', us)
end
local function event(ts, typ, sub, worker, ...)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', '@MAXLEN@', '*',
             'type', typ, 'sub', sub, 'worker', worker, 't', ts, ...)
end
local function size(sub) return tonumber(redis.call('HGET', K_SIZES, sub) or '0') end
-- Spend one attempt of a leased sub (already removed from leased/owner): retry or dead.
local function spend(sub, reason)
  local att = redis.call('HINCRBY', K_ATTEMPTS, sub, 1)
  redis.call('HINCRBY', K_PROGRESS, 'failures', 1)
  redis.call('HSET', K_ERRORS, sub, reason)
  local max = tonumber(redis.call('HGET', K_META, 'max_attempts') or '1')
  if att >= max then
    redis.call('SADD', K_DEAD, sub)
    redis.call('HINCRBY', K_PROGRESS, 'dead', 1)
    redis.call('HINCRBY', K_PROGRESS, 'dead_points', size(sub))
    return 'dead', att
  end
  redis.call('RPUSH', K_PENDING, sub)
  return 'retry', att
end
-- Lease up to n pending subproblems to worker (done/dead/leased ids met in pending are dropped).
local function claim(worker, n, lease_ms, now_ms, ts)
  local out = {}
  while #out < n do
    local sub = redis.call('LPOP', K_PENDING)
    if not sub then break end
    if redis.call('SISMEMBER', K_DONE, sub) == 0 and redis.call('SISMEMBER', K_DEAD, sub) == 0
       and not redis.call('ZSCORE', K_LEASED, sub) then
      redis.call('ZADD', K_LEASED, now_ms + lease_ms, sub)
      redis.call('HSET', K_OWNER, sub, worker)
      local att = tonumber(redis.call('HGET', K_ATTEMPTS, sub) or '0') + 1
      event(ts, 'claimed', sub, worker, 'attempt', att)
      out[#out + 1] = sub
    end
  end
  return out
end
-- Mark each sub done (first ack wins); one 0/1 per sub; the counters move once per call.
local function ack(worker, subs, ts)
  local acked, n, points = {}, 0, 0
  for _, sub in ipairs(subs) do
    if redis.call('HEXISTS', K_SIZES, sub) == 0 or redis.call('SISMEMBER', K_DONE, sub) == 1
       or redis.call('SISMEMBER', K_DEAD, sub) == 1 then
      acked[#acked + 1] = 0
    else
      redis.call('SADD', K_DONE, sub)
      redis.call('ZREM', K_LEASED, sub)
      redis.call('HDEL', K_OWNER, sub)
      n, points = n + 1, points + size(sub)
      event(ts, 'acked', sub, worker)
      acked[#acked + 1] = 1
    end
  end
  if n > 0 then
    redis.call('HINCRBY', K_PROGRESS, 'done', n)
    redis.call('HINCRBY', K_PROGRESS, 'done_points', points)
  end
  return acked
end
""".replace("@MAXLEN@", str(EVENTS_MAXLEN))

_CLAIM = """
local worker, n, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now_ms, ts = now()
local out = claim(worker, n, lease_ms, now_ms, ts)
redis.call('HSET', K_WORKERS, worker, ts)
return out
"""

# ack(worker, subs) then, if n > 0, claim(worker, n): a worker's whole exchange per batch, one round trip.
# The claim takes at most a fair share of what is pending (pending / workers heard from, rounded up),
# so a batching worker never leaves the others idle at the end of a run.
_ACK_CLAIM = """
local worker, n, lease_ms, n_acks = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now_ms, ts = now()
local subs = {}
for i = 5, 4 + n_acks do subs[#subs + 1] = ARGV[i] end
local acked = ack(worker, subs, ts)
local out = {}
if n > 0 then
  local share = math.ceil(redis.call('LLEN', K_PENDING) / math.max(redis.call('HLEN', K_WORKERS), 1))
  out = claim(worker, math.max(math.min(n, share), 1), lease_ms, now_ms, ts)
  redis.call('HSET', K_WORKERS, worker, ts)
end
return {acked, out}
"""

_HEARTBEAT = """
local worker, lease_ms = ARGV[1], tonumber(ARGV[2])
local now_ms, ts = now()
local lost = {}
for i = 3, #ARGV do
  local sub = ARGV[i]
  if redis.call('HGET', K_OWNER, sub) == worker then
    redis.call('ZADD', K_LEASED, 'XX', now_ms + lease_ms, sub)
  else
    lost[#lost + 1] = sub
  end
end
redis.call('HSET', K_WORKERS, worker, ts)
return lost
"""

_ACK = """
local worker, sub = ARGV[1], ARGV[2]
if redis.call('HEXISTS', K_SIZES, sub) == 0 or redis.call('SISMEMBER', K_DONE, sub) == 1
   or redis.call('SISMEMBER', K_DEAD, sub) == 1 then
  return 0
end
local _, ts = now()
redis.call('SADD', K_DONE, sub)
redis.call('ZREM', K_LEASED, sub)
redis.call('HDEL', K_OWNER, sub)
redis.call('HINCRBY', K_PROGRESS, 'done', 1)
redis.call('HINCRBY', K_PROGRESS, 'done_points', size(sub))
event(ts, 'acked', sub, worker)
return 1
"""

_FAIL = """
local worker, sub, reason = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', K_OWNER, sub) ~= worker or not redis.call('ZSCORE', K_LEASED, sub) then
  return 'stale'
end
local _, ts = now()
redis.call('ZREM', K_LEASED, sub)
redis.call('HDEL', K_OWNER, sub)
local outcome, att = spend(sub, reason)
event(ts, 'failed', sub, worker, 'outcome', outcome, 'attempt', att, 'reason', reason)
return outcome
"""

_PREEMPT = """
local worker = ARGV[1]
local _, ts = now()
local out = {}
for i = #ARGV, 2, -1 do  -- reverse, so LPUSH leaves them at the front in the given order
  local sub = ARGV[i]
  if redis.call('HGET', K_OWNER, sub) == worker then
    redis.call('ZREM', K_LEASED, sub)
    redis.call('HDEL', K_OWNER, sub)
    redis.call('LPUSH', K_PENDING, sub)
    redis.call('HINCRBY', K_PROGRESS, 'preemptions', 1)
    event(ts, 'preempted', sub, worker)
    table.insert(out, 1, sub)
  end
end
return out
"""

_REQUEUE = """
local now_ms, ts = now()
local subs = redis.call('ZRANGEBYSCORE', K_LEASED, '-inf', '(' .. now_ms,
                        'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, sub in ipairs(subs) do
  local worker = redis.call('HGET', K_OWNER, sub) or ''
  redis.call('ZREM', K_LEASED, sub)
  redis.call('HDEL', K_OWNER, sub)
  redis.call('HINCRBY', K_PROGRESS, 'expirations', 1)
  local outcome, att = spend(sub, 'lease expired')
  event(ts, 'expired', sub, worker, 'outcome', outcome, 'attempt', att, 'reason', 'lease expired')
  out[#out + 1] = sub
  out[#out + 1] = outcome
end
return out
"""


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
        self.keys = {name: self.prefix + name for name in _KEY_NAMES + ("seeded",)}
        self._script_keys = [self.keys[name] for name in _KEY_NAMES]
        self._claim = client.register_script(_PRELUDE + _CLAIM)
        self._ack_claim = client.register_script(_PRELUDE + _ACK_CLAIM)
        self._heartbeat = client.register_script(_PRELUDE + _HEARTBEAT)
        self._ack = client.register_script(_PRELUDE + _ACK)
        self._fail = client.register_script(_PRELUDE + _FAIL)
        self._preempt = client.register_script(_PRELUDE + _PREEMPT)
        self._requeue = client.register_script(_PRELUDE + _REQUEUE)

    def _run(self, script: Any, *args: Any) -> Any:
        return script(keys=self._script_keys, args=list(args))

    # ---- seeding ---------------------------------------------------------------------
    def seed(self, sizes: Sequence[int], max_attempts: int, *, done: Iterable[int] = (),
             dead: Iterable[int] = (), attempts: Mapping[int, int] | None = None) -> bool:
        """Seed the run once (one MULTI/EXEC guarded by WATCH); False if already seeded."""
        sizes = [int(s) for s in sizes]
        n = len(sizes)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if any(s < 0 for s in sizes):
            raise ValueError("sizes must be non-negative")
        done_set, dead_set = {int(i) for i in done}, {int(i) for i in dead}
        dead_set -= done_set  # a result on disk wins over an earlier death
        attempts = {int(k): int(v) for k, v in (attempts or {}).items() if int(v) > 0}
        for i in done_set | dead_set | attempts.keys():
            if not 0 <= i < n:
                raise ValueError(f"subproblem {i} out of range 0..{n - 1}")
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(k["seeded"])
                if pipe.exists(k["seeded"]):
                    return False
                pipe.multi()
                pipe.delete(*(k[name] for name in _KEY_NAMES if name not in ("workers", "events")))
                items = list(enumerate(sizes))
                for c in range(0, n, _CHUNK):
                    pipe.hset(k["sizes"], mapping=dict(items[c:c + _CHUNK]))
                for key, ids in (("done", sorted(done_set)), ("dead", sorted(dead_set))):
                    for c in range(0, len(ids), _CHUNK):
                        pipe.sadd(k[key], *ids[c:c + _CHUNK])
                att = list(attempts.items())
                for c in range(0, len(att), _CHUNK):
                    pipe.hset(k["attempts"], mapping=dict(att[c:c + _CHUNK]))
                pipe.hset(k["progress"], mapping={
                    "total": n, "total_points": sum(sizes),
                    "done": len(done_set), "done_points": sum(sizes[i] for i in done_set),
                    "dead": len(dead_set), "dead_points": sum(sizes[i] for i in dead_set),
                    "failures": 0, "preemptions": 0, "expirations": 0})
                live = [i for i in range(n) if i not in done_set and i not in dead_set]
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

    def ack(self, worker: str, sub: int) -> bool:
        """Mark ``sub`` done (first ack from any worker wins); False if already done/dead."""
        return bool(self._run(self._ack, worker, int(sub)))

    def ack_many(self, worker: str, subs: Sequence[int]) -> list[bool]:
        """``ack`` of each of ``subs``, in one round trip: one bool per sub, in order."""
        return self.ack_and_claim(worker, subs, 0, 1.0)[0]

    def ack_and_claim(self, worker: str, acks: Sequence[int], n: int,
                      lease_seconds: float) -> tuple[list[bool], list[int]]:
        """``ack_many(worker, acks)`` then, if ``n`` > 0, ``claim(worker, n, lease_seconds)``, atomically
        and in one round trip: a worker's whole exchange with the queue per batch of subproblems.

        The claim leases at most a fair share of the pending list (its length over the number of
        workers in the heartbeat table, rounded up; at least 1), so batches shrink at the end of a run.
        """
        acked, claimed = self._run(self._ack_claim, worker, max(int(n), 0), _lease_ms(lease_seconds),
                                   len(acks), *(int(i) for i in acks))
        return [bool(x) for x in acked], [int(x) for x in claimed]

    def fail(self, worker: str, sub: int, reason: str) -> str:
        """Spend an attempt of a lease ``worker`` owns: "retry", "dead", or "stale"."""
        return _s(self._run(self._fail, worker, int(sub), str(reason)[:REASON_MAX_CHARS]))

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

    def forget_worker(self, worker: str) -> None:
        """Drop a worker from the heartbeat table."""
        self.client.hdel(self.keys["workers"], worker)

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

    def dead_ids(self) -> list[int]:
        """Sorted ids of dead subproblems."""
        return sorted(int(x) for x in self.client.smembers(self.keys["dead"]))

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
