"""The queue's server side: one Lua script per mutation of :class:`mcc.work.queue.Queue`, run atomically by
Redis with deadlines from its own clock (``TIME``). Every script starts with ``PRELUDE``, which names the keys
in ``KEY_NAMES`` order (the order ``Queue`` passes them) and holds the helpers the scripts share. The key
layout and the rules the scripts keep are described in :mod:`mcc.work.queue`.
"""
from __future__ import annotations

EVENTS_MAXLEN = 1_000_000  # the events stream is trimmed to about this many entries (XADD MAXLEN ~)

# Order of KEYS passed to every script.
KEY_NAMES = ("pending", "leased", "owner", "attempts", "done", "dead", "errors",
             "sizes", "progress", "workers", "events", "meta", "partial", "manager_lock", "result")

PRELUDE = """
local K_PENDING, K_LEASED, K_OWNER, K_ATTEMPTS, K_DONE, K_DEAD, K_ERRORS,
      K_SIZES, K_PROGRESS, K_WORKERS, K_EVENTS, K_META, K_PARTIAL, K_MANAGER_LOCK, K_RESULT = unpack(KEYS)
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
-- Lease up to n pending subproblems to worker (done/dead/leased ids met in pending are dropped);
-- nothing while the run leases only under a live manager (meta 'supervised') and none holds the lock.
local function claim(worker, n, lease_ms, now_ms, ts)
  local out = {}
  if redis.call('HGET', K_META, 'supervised') == '1' and redis.call('EXISTS', K_MANAGER_LOCK) == 0 then
    return out
  end
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
-- Mark each sub done (first ack wins) and record the object holding its result (key, '' for none:
-- the winning ack's only); one 0/1 per sub; the counters move once per call.
local function ack(worker, subs, ts, key)
  local acked, n, points = {}, 0, 0
  for _, sub in ipairs(subs) do
    if redis.call('HEXISTS', K_SIZES, sub) == 0 or redis.call('SISMEMBER', K_DONE, sub) == 1
       or redis.call('SISMEMBER', K_DEAD, sub) == 1 then
      acked[#acked + 1] = 0
    else
      redis.call('SADD', K_DONE, sub)
      redis.call('ZREM', K_LEASED, sub)
      redis.call('HDEL', K_OWNER, sub)
      if key ~= '' then redis.call('HSET', K_RESULT, sub, key) end
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

CLAIM = """
local worker, n, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now_ms, ts = now()
local out = claim(worker, n, lease_ms, now_ms, ts)
redis.call('HSET', K_WORKERS, worker, ts)
return out
"""

# ack(worker, subs) then, if n > 0, claim(worker, n): a worker's whole exchange per batch, one round trip.
# The claim takes at most a fair share of what is pending (pending / workers heard from, rounded up),
# so a batching worker never leaves the others idle at the end of a run.
ACK_CLAIM = """
local worker, n, lease_ms, n_acks, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local now_ms, ts = now()
local subs = {}
for i = 6, 5 + n_acks do subs[#subs + 1] = ARGV[i] end
local acked = ack(worker, subs, ts, key)
local out = {}
if n > 0 then
  local share = math.ceil(redis.call('LLEN', K_PENDING) / math.max(redis.call('HLEN', K_WORKERS), 1))
  out = claim(worker, math.max(math.min(n, share), 1), lease_ms, now_ms, ts)
  redis.call('HSET', K_WORKERS, worker, ts)
end
return {acked, out}
"""

# ack_partial(worker, sub, base, key, p1, reason1, p2, reason2, ...): sub is done with the rows of its other
# points (in object key); each failed point p becomes the one-point subproblem base + p, one attempt spent.
ACK_PARTIAL = """
local worker, sub, base, key = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('HEXISTS', K_SIZES, sub) == 0 or redis.call('SISMEMBER', K_DONE, sub) == 1
   or redis.call('SISMEMBER', K_DEAD, sub) == 1 then
  return {}
end
local _, ts = now()
local max = tonumber(redis.call('HGET', K_META, 'max_attempts') or '1')
local points, out = {}, {}
for i = 5, #ARGV, 2 do
  local p, reason = ARGV[i], ARGV[i + 1]
  local psub = tostring(base + tonumber(p))
  points[#points + 1] = p
  if redis.call('HEXISTS', K_SIZES, psub) == 0 then
    redis.call('HSET', K_SIZES, psub, 1)
    redis.call('HINCRBY', K_SIZES, sub, -1)
    redis.call('HINCRBY', K_PROGRESS, 'total', 1)
    redis.call('HSET', K_ATTEMPTS, psub, 1)
    redis.call('HSET', K_ERRORS, psub, reason)
    redis.call('HINCRBY', K_PROGRESS, 'failures', 1)
    local outcome = 'retry'
    if max <= 1 then
      outcome = 'dead'
      redis.call('SADD', K_DEAD, psub)
      redis.call('HINCRBY', K_PROGRESS, 'dead', 1)
      redis.call('HINCRBY', K_PROGRESS, 'dead_points', 1)
    else
      redis.call('RPUSH', K_PENDING, psub)
    end
    event(ts, 'spawned', psub, worker, 'parent', sub, 'point', p, 'outcome', outcome, 'attempt', 1,
          'reason', reason)
    out[#out + 1] = psub
    out[#out + 1] = outcome
  end
end
redis.call('HSET', K_PARTIAL, sub, table.concat(points, ','))
ack(worker, {sub}, ts, key)
return out
"""

HEARTBEAT = """
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

ACK = """
local worker, sub, key = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', K_SIZES, sub) == 0 or redis.call('SISMEMBER', K_DONE, sub) == 1
   or redis.call('SISMEMBER', K_DEAD, sub) == 1 then
  return 0
end
local _, ts = now()
redis.call('SADD', K_DONE, sub)
redis.call('ZREM', K_LEASED, sub)
redis.call('HDEL', K_OWNER, sub)
if key ~= '' then redis.call('HSET', K_RESULT, sub, key) end
redis.call('HINCRBY', K_PROGRESS, 'done', 1)
redis.call('HINCRBY', K_PROGRESS, 'done_points', size(sub))
event(ts, 'acked', sub, worker)
return 1
"""

FAIL = """
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

PREEMPT = """
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

REQUEUE = """
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

# settled(id1, id2, ...): per id its state ('done', 'dead' or ''), the object its winning ack recorded and the
# points a partial ack left out ('' for none): what the manager's incremental combine needs, one round trip.
SETTLED = """
local out = {}
for i = 1, #ARGV do
  local sub = ARGV[i]
  if redis.call('SISMEMBER', K_DONE, sub) == 1 then
    out[#out + 1] = 'done'
    out[#out + 1] = redis.call('HGET', K_RESULT, sub) or ''
    out[#out + 1] = redis.call('HGET', K_PARTIAL, sub) or ''
  else
    out[#out + 1] = redis.call('SISMEMBER', K_DEAD, sub) == 1 and 'dead' or ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""


MOVE_ALL = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], ARGV[1], ARGV[2]) do n = n + 1 end
return n
"""
