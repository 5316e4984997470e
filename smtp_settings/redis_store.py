"""The shared limits in Redis: the LimitStore of smtp_settings/limit_stores.py, with the same
semantics as DatabaseStore. Every decision that reads before it writes is one Lua script, so
it runs alone on the Redis server; plain reads are MULTI/EXEC pipelines, so they see one moment.

Keys, all under the prefix, per server id:
- `{id}:slots`  zset slot number -> expires_at, and `{id}:owners` hash slot number -> owner
- `{id}:demand` zset owner -> expires_at, and `{id}:waiting` hash owner -> 1 or 0
- `{id}:state`  hash: next_send_at, ceiling, probe_at, throttled_rate, throttled_at
- `{id}:win:{name}` hash bucket -> units ("hour", "day", and "sent" for the card), expiring
  a span and a bucket after the last unit counted, when none of it counts any more
and `owner:{owner}`, the ids of the servers where an owner took a slot or noted demand, so that
drop_owner finds them without scanning the key space. forget() does scan (SCAN, for the
server's keys only): it runs once per deleted server.

Scripts build no key names of their own except drop_owner's, which follows the owner's index:
this is for one Redis server (or a primary with replicas), not Redis Cluster.
"""

import math
import re

import redis

from smtp_settings.limit_stores import SENT_BUCKET_S, Figures, State, Window, exhausted

# Times travel as repr() strings and are stored as received; a time computed in Lua is written
# with %.17g, since Lua's own tostring keeps 14 digits only.

TAKE_SLOT = """
-- KEYS: slots, owners, the owner's index; ARGV: owner, ceiling, expires_at, now, server id
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
for _, number in ipairs(expired) do
  redis.call('ZREM', KEYS[1], number)
  redis.call('HDEL', KEYS[2], number)
end
local taken = redis.call('ZRANGE', KEYS[1], 0, -1)
if #taken >= tonumber(ARGV[2]) then
  return false
end
local held = {}
for _, number in ipairs(taken) do
  held[tonumber(number)] = true
end
local number = 0  -- the smallest free one
while held[number] do
  number = number + 1
end
redis.call('ZADD', KEYS[1], ARGV[3], number)
redis.call('HSET', KEYS[2], number, ARGV[1])
redis.call('SADD', KEYS[3], ARGV[5])
return number
"""

GIVE_SLOT = """
-- KEYS: slots, owners; ARGV: owner, number
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
"""

RENEW = """
-- KEYS: slots and owners of each slot in turn; ARGV: owner, expires_at, the slots' numbers
local held = {}
for i = 3, #ARGV do
  local slots, owners = KEYS[2 * i - 5], KEYS[2 * i - 4]
  if redis.call('HGET', owners, ARGV[i]) == ARGV[1] then
    redis.call('ZADD', slots, ARGV[2], ARGV[i])
    table.insert(held, i - 3)
  end
end
return held
"""

DROP_OWNER = """
-- KEYS: the owner's index; ARGV: prefix, owner
for _, server in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local slots, owners = ARGV[1] .. server .. ':slots', ARGV[1] .. server .. ':owners'
  local held = redis.call('HGETALL', owners)
  for i = 1, #held, 2 do
    if held[i + 1] == ARGV[2] then
      redis.call('ZREM', slots, held[i])
      redis.call('HDEL', owners, held[i])
    end
  end
  redis.call('ZREM', ARGV[1] .. server .. ':demand', ARGV[2])
  redis.call('HDEL', ARGV[1] .. server .. ':waiting', ARGV[2])
end
redis.call('DEL', KEYS[1])
"""

RESERVE = """
-- KEYS: state; ARGV: interval, now. Returns the new next_send_at: the turn ends there.
local previous = tonumber(redis.call('HGET', KEYS[1], 'next_send_at')) or 0
local next_send_at = string.format('%.17g', math.max(previous, tonumber(ARGV[2])) + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'next_send_at', next_send_at)
return next_send_at
"""

# Counting units in a bucket: a new bucket drops those out of the window.
ADD = """
local function add(key, bucket, units, keep_from, ttl_ms)
  if redis.call('HINCRBY', key, bucket, units) == tonumber(units) then
    for _, old in ipairs(redis.call('HKEYS', key)) do
      if tonumber(old) < tonumber(keep_from) then
        redis.call('HDEL', key, old)
      end
    end
  end
  redis.call('PEXPIRE', key, ttl_ms)
end
"""

TAKE_QUOTA = (
    ADD
    + """
-- KEYS: one hash per window; ARGV: units, then per window: quota, first counted, bucket, ttl_ms.
-- Returns {} when counted, else {index of the full window, its counted buckets and units...}.
local units = tonumber(ARGV[1])
for w, key in ipairs(KEYS) do
  local quota, first = tonumber(ARGV[4 * w - 2]), tonumber(ARGV[4 * w - 1])
  local counted, used = {}, 0
  local buckets = redis.call('HGETALL', key)
  for i = 1, #buckets, 2 do
    if tonumber(buckets[i]) >= first then
      table.insert(counted, buckets[i])
      table.insert(counted, buckets[i + 1])
      used = used + tonumber(buckets[i + 1])
    end
  end
  if used + units > quota then
    table.insert(counted, 1, w)
    return counted
  end
end
for w, key in ipairs(KEYS) do
  add(key, ARGV[4 * w], units, ARGV[4 * w - 1], ARGV[4 * w + 1])
end
return {}
"""
)

COUNT_SENT = (
    ADD
    + """
-- KEYS: the "sent" hash; ARGV: bucket, units, first kept, ttl_ms
add(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

CLAIM_PROBE = """
-- KEYS: state; ARGV: latest probe_at that is quiet enough, now
if (tonumber(redis.call('HGET', KEYS[1], 'probe_at')) or 0) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'probe_at', ARGV[2])
  return 1
end
return 0
"""

SET_THROTTLE = """
-- KEYS: state; ARGV: unchanged_since, now, rate ('' for none)
if (tonumber(redis.call('HGET', KEYS[1], 'throttled_at')) or 0) > tonumber(ARGV[1]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'throttled_rate')
else
  redis.call('HSET', KEYS[1], 'throttled_rate', ARGV[3])
end
redis.call('HSET', KEYS[1], 'throttled_at', ARGV[2])
return 1
"""

SENT_KEPT = 60 // SENT_BUCKET_S  # buckets in the card's minute


def _ttl_ms(span_s: float, bucket_s: float) -> int:
    """How long a window's hash may still count something after a unit is added."""
    return math.ceil((span_s + bucket_s) * 1000) + 1000


class RedisStore:
    """The shared limits in Redis. Thread-safe: redis-py's client keeps a connection pool."""

    def __init__(self, url: str, prefix: str):
        # A Redis out of reach makes senders wait a little (STORE_ERRORS), never hang.
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
        self.prefix = prefix
        script = self.client.register_script
        self._take_slot, self._give_slot, self._renew = script(TAKE_SLOT), script(GIVE_SLOT), script(RENEW)
        self._drop_owner, self._reserve = script(DROP_OWNER), script(RESERVE)
        self._take_quota, self._count_sent = script(TAKE_QUOTA), script(COUNT_SENT)
        self._claim_probe, self._set_throttle = script(CLAIM_PROBE), script(SET_THROTTLE)

    def _key(self, server_id: int, what: str) -> str:
        return f"{self.prefix}{server_id}:{what}"

    def _owner_key(self, owner: str) -> str:
        return f"{self.prefix}owner:{owner}"

    # -- slots --

    def take_slot(self, server_id, owner, ceiling, expires_at, now):
        keys = [self._key(server_id, "slots"), self._key(server_id, "owners"), self._owner_key(owner)]
        return self._take_slot(keys, [owner, ceiling, repr(expires_at), repr(now), server_id])

    def give_slot(self, server_id, owner, number):
        self._give_slot([self._key(server_id, "slots"), self._key(server_id, "owners")], [owner, number])

    def renew(self, owner, slots, expires_at):
        if not slots:
            return []
        keys = [self._key(server_id, what) for server_id, _ in slots for what in ("slots", "owners")]
        held = self._renew(keys, [owner, repr(expires_at), *(number for _, number in slots)])
        return [slots[i] for i in held]

    def _live_slots(self, pipe, server_id: int, now: str) -> None:
        pipe.zrangebyscore(self._key(server_id, "slots"), now, "+inf")
        pipe.hgetall(self._key(server_id, "owners"))

    @staticmethod
    def _count_holders(live: list[str], owners: dict[str, str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for number in live:
            counts[owners[number]] = counts.get(owners[number], 0) + 1
        return counts

    def holders(self, server_id, now):
        with self.client.pipeline() as pipe:
            self._live_slots(pipe, server_id, repr(now))
            return self._count_holders(*pipe.execute())

    def drop_owner(self, owner):
        self._drop_owner([self._owner_key(owner)], [self.prefix, owner])

    # -- demand --

    def note_demand(self, server_id, owner, waiting, expires_at):
        with self.client.pipeline() as pipe:
            pipe.zadd(self._key(server_id, "demand"), {owner: repr(expires_at)})
            pipe.hset(self._key(server_id, "waiting"), owner, int(waiting))
            pipe.sadd(self._owner_key(owner), server_id)
            pipe.execute()

    def _live_demand(self, pipe, server_id: int, now: str) -> None:
        pipe.zrangebyscore(self._key(server_id, "demand"), now, "+inf")
        pipe.hgetall(self._key(server_id, "waiting"))

    def demand(self, server_id, now):
        with self.client.pipeline() as pipe:
            self._live_demand(pipe, server_id, repr(now))
            live, waiting = pipe.execute()
        return {owner: waiting[owner] == "1" for owner in live}

    # -- pacing and quotas --

    def reserve(self, server_id, interval_s, now):
        next_send_at = self._reserve([self._key(server_id, "state")], [repr(interval_s), repr(now)])
        return float(next_send_at) - interval_s

    def take_quota(self, server_id, units, windows, now):
        keys = [self._key(server_id, f"win:{window.name}") for window in windows]
        args = [units]
        for window in windows:
            args += [
                window.quota,
                window.first_counted(now),
                window.bucket(now),
                _ttl_ms(window.span_s, window.bucket_s),
            ]
        full = self._take_quota(keys, args)
        if not full:
            return None
        index, counted = full[0], full[1:]
        buckets = {int(bucket): int(used) for bucket, used in zip(counted[::2], counted[1::2], strict=True)}
        return exhausted(windows[index - 1], buckets, units, now)

    def count_sent(self, server_id, units, now):
        bucket = math.floor(now / SENT_BUCKET_S)
        ttl_ms = _ttl_ms(SENT_KEPT * SENT_BUCKET_S, SENT_BUCKET_S)
        self._count_sent([self._key(server_id, "win:sent")], [bucket, units, bucket - SENT_KEPT, ttl_ms])

    # -- feedback --

    def _read_state(self, pipe, server_id: int) -> None:
        pipe.hmget(self._key(server_id, "state"), ["ceiling", "probe_at", "throttled_rate", "throttled_at"])

    @staticmethod
    def _parse_state(fields: list[str | None]) -> State:
        ceiling, probe_at, rate, throttled_at = fields
        return State(
            int(ceiling) if ceiling is not None else None,
            float(probe_at or 0),
            float(rate) if rate is not None else None,
            float(throttled_at or 0),
        )

    def state(self, server_id):
        with self.client.pipeline() as pipe:
            self._read_state(pipe, server_id)
            return self._parse_state(*pipe.execute())

    def set_ceiling(self, server_id, ceiling):
        if ceiling is None:
            self.client.hdel(self._key(server_id, "state"), "ceiling")
        else:
            self.client.hset(self._key(server_id, "state"), "ceiling", ceiling)

    def claim_probe(self, server_id, quiet_s, now):
        return self._claim_probe([self._key(server_id, "state")], [repr(now - quiet_s), repr(now)]) == 1

    def note_refusal(self, server_id, now):
        self.client.hset(self._key(server_id, "state"), "probe_at", repr(now))

    def set_throttle(self, server_id, rate, unchanged_since, now):
        args = [repr(unchanged_since), repr(now), "" if rate is None else repr(rate)]
        return self._set_throttle([self._key(server_id, "state")], args) == 1

    def figures(self, server_id, windows: list[Window], now):
        with self.client.pipeline() as pipe:
            for window in windows:
                pipe.hgetall(self._key(server_id, f"win:{window.name}"))
            pipe.hgetall(self._key(server_id, "win:sent"))
            self._live_slots(pipe, server_id, repr(now))
            self._live_demand(pipe, server_id, repr(now))
            self._read_state(pipe, server_id)
            *counts, sent, live, owners, demand, _, state = pipe.execute()

        def total(buckets: dict[str, str], first: int) -> int:
            return sum(int(used) for bucket, used in buckets.items() if int(bucket) >= first)

        holders = self._count_holders(live, owners)
        return Figures(
            open=sum(holders.values()),
            sent_last_minute=total(sent, math.floor(now / SENT_BUCKET_S) - SENT_KEPT + 1),
            used={
                window.name: total(buckets, window.first_counted(now))
                for window, buckets in zip(windows, counts, strict=True)
            },
            state=self._parse_state(state),
            owners=len(set(holders) | set(demand)),
        )

    def forget(self, server_id):
        plain = re.sub(r"([*?\[\]\\])", r"\\\1", self._key(server_id, ""))  # the prefix is text, not a pattern
        keys = list(self.client.scan_iter(match=plain + "*", count=1000))
        if keys:
            self.client.delete(*keys)
