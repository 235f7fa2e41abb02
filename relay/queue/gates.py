"""Per-subscription gates in Redis, shared by every worker: the attempts in flight to one
subscription (``max_in_flight``), the attempts started per second (``max_per_second``), and
whether it may be sent to at all (closed by ``DELETE`` or a disable through the API).

An attempt passes its gate right before its request goes out and leaves it once the receiver
answered. A holder is a member of the subscription's sorted set, scored by when its hold
lapses, so a killed worker's holds free themselves; the set expires with its last holder, so
nothing outlives a deleted subscription for long. The per-second budget is one counter per
subscription and second of Redis's clock (``TIME``), which every worker shares.

Closing is how ``DELETE`` keeps its promise that no attempt starts once it returned: the API
commits, closes the gate, then waits until nobody holds it. A worker that passed before the
close is waited for; one that comes after is turned away. Both sides are atomic in Redis, so
there is no third case. If Redis loses the flag (a flush), the database still says the
subscription is gone, and the next job that loads it finds that. The closed flag itself
lapses after two job lifetimes: by then every job that could have loaded the subscription
before it was deleted or disabled has ended.

Gate requests of concurrent jobs share one script call, and releases one pipeline
(``Coalescer``): a busy worker makes one round trip for many attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from arq.connections import ArqRedis

from relay.coalesce import Coalescer

_HOLDERS = "relay:gate:holders:"
_CLOSED = "relay:gate:closed:"
_RATE = "relay:gate:rate:"


class Pass(IntEnum):
    GRANTED = 1
    BUSY = 0  # max_in_flight attempts are in flight, in some worker
    THROTTLED = 2  # max_per_second attempts started in this second
    CLOSED = -1  # deleted or disabled: send nothing


# ARGV: per request 5 values: subscription id, holder token, limit, lease ms, rate (0: none).
# Returns one Pass per request.
_ENTER = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {{}}
for i = 1, #ARGV, 5 do
  local sub, token = ARGV[i], ARGV[i + 1]
  local limit, lease, rate = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local holders = '{_HOLDERS}' .. sub
  local verdict = 1
  if redis.call('EXISTS', '{_CLOSED}' .. sub) == 1 then
    verdict = -1
  else
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
    if redis.call('ZCARD', holders) >= limit then
      verdict = 0
    elseif rate > 0 then
      local window = '{_RATE}' .. sub .. ':' .. t[1]
      local started = redis.call('INCR', window)
      if started == 1 then redis.call('EXPIRE', window, 2) end
      if started > rate then verdict = 2 end
    end
  end
  if verdict == 1 then
    redis.call('ZADD', holders, now + lease, token)
    redis.call('PEXPIRE', holders, lease)
  end
  out[#out + 1] = verdict
end
return out
"""

# KEYS[1]: a subscription's holders; how many hold it now (lapsed holds dropped)
_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Request:
    subscription_id: str
    token: str  # the holder's name (the job's id): unique among the subscription's holders
    max_in_flight: int
    max_per_second: int | None


class Gates:
    """One per process; ``lease``: how long a hold lasts if its holder never lets go."""

    def __init__(self, redis: ArqRedis, *, lease: float, max_batch: int = 200) -> None:
        self.redis = redis
        self.lease_ms = int(lease * 1000)
        self._enter_script = redis.register_script(_ENTER)
        self._held_script = redis.register_script(_HELD)
        self._entries: Coalescer[Request, Pass] = Coalescer(self._enter, max_batch=max_batch)
        self._exits: Coalescer[Request, None] = Coalescer(self._leave, max_batch=max_batch)

    async def enter(self, request: Request) -> Pass:
        return await self._entries.submit(request)

    async def leave(self, request: Request) -> None:
        await self._exits.submit(request)

    async def close(self, subscription_id: str) -> None:
        """Turn away every attempt from now on. Only jobs that loaded the subscription before
        the database said it was gone need turning away, and none lives longer than a job
        (``lease``): so the flag lapses after two, and a flag that could not be removed
        never parks a re-enabled subscription for long."""
        await self.redis.set(_CLOSED + subscription_id, b"1", px=2 * self.lease_ms)

    async def open(self, subscription_id: str) -> None:
        await self.redis.delete(_CLOSED + subscription_id)

    async def wait_until_idle(self, subscription_id: str, *, within: float) -> bool:
        """Wait until no attempt to the subscription is in flight (False: still some after
        ``within`` seconds; their holds lapse at most ``lease`` after they began)."""
        deadline = time.monotonic() + within
        while True:
            held = await self._held_script(keys=[_HOLDERS + subscription_id])
            if int(held) == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def _enter(self, requests: Sequence[Request]) -> list[Pass]:
        args: list[str | int] = []
        for r in requests:
            args += [
                r.subscription_id,
                r.token,
                r.max_in_flight,
                self.lease_ms,
                r.max_per_second or 0,
            ]
        verdicts = await self._enter_script(args=args)
        return [Pass(int(v)) for v in verdicts]

    async def _leave(self, requests: Sequence[Request]) -> list[None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in requests:
                pipe.zrem(_HOLDERS + r.subscription_id, r.token)
            await pipe.execute()
        return [None] * len(requests)
