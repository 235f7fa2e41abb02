"""Per-subscription gates in Redis, shared by every worker: the attempts in flight to one
subscription (``max_in_flight``), the attempts started per second (``max_per_second``),
whether it may be sent to at all (closed by ``DELETE`` or a disable through the API), and
its circuit (left alone while its endpoint keeps timing out).

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

The circuit (``Breaker``) is judged on what every worker heard, since a worker sees only its
share of a subscription's attempts: an answer in any worker closes it, and it opens after
``after`` timeouts with no answer between them, spread over ``span`` seconds (timeouts
together are one stall). Open, the subscription's attempts are turned away for ``cooldown``
seconds (their jobs step aside in Redis: no attempt is spent, the deliveries stay due in the
database). When it ends, a probe goes out (``probes``) while the rest stay away as long again (a
backlog of thousands of jobs must not come back every few seconds to be turned away); an
answer closes it, and only a probe that times out opens it again, for twice as long (up to
``longest``): attempts that were already out when it opened cannot lengthen it.

Gate requests of concurrent jobs share one script call, and so do releases (``Coalescer``):
a busy worker makes one round trip for many attempts.
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
_CIRCUIT = "relay:gate:circuit:"


class Pass(IntEnum):
    GRANTED = 1
    BUSY = 0  # max_in_flight attempts are in flight, in some worker
    THROTTLED = 2  # max_per_second attempts started in this second
    OPEN = 3  # its circuit is open: its endpoint keeps timing out
    CLOSED = -1  # deleted or disabled: send nothing


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Pass
    wait: float = 0.0  # OPEN: seconds until attempts may go again


@dataclass(frozen=True, slots=True)
class Breaker:
    """When a subscription's circuit opens, and for how long (seconds)."""

    after: int = 3
    span: float = 30.0  # two delivery timeouts
    cooldown: float = 10.0
    longest: float = 300.0
    probes: int = 1  # attempts let through once a cooldown ended


# One script for both ways through the gate, so that the holds let go and the passes asked
# for at about the same time share one round trip, in the order they were asked (a release
# before a pass: the pass may take the place just freed). ARGV: lease, probes, after, span,
# cooldown, longest (ms but probes and after); then per call 5 values: 1 (enter) or 0
# (leave), subscription id, holder token, and limit and rate (0: none) to enter, or heard
# (1: an answer, 0: a timeout, -1: neither) and 0 to leave. Returns two values per call: the
# verdict (enter; 0 for a leave) and the ms its circuit stays open (0: closed).
_GATE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, probes, after = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local span, cooldown, longest = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local function enter(sub, token, limit, rate)
  local holders, circuit = '{_HOLDERS}' .. sub, '{_CIRCUIT}' .. sub
  local verdict, wait = 1, 0
  local state = redis.call('HMGET', circuit, 'until', 'length', 'probes')
  local open_until, probing = tonumber(state[1]), tonumber(state[3])
  if open_until and now >= open_until then  -- the cooldown ended: a round of probes, while
    -- the rest stay away as long again, and at least until a probe has timed out (a round
    -- that began before the last one's answer would make it stale: never reopened longer)
    open_until = now + math.max(tonumber(state[2]), span / 2 + 1000)
    probing = probes
    redis.call('HSET', circuit, 'until', open_until, 'opened', now, 'probes', probing)
  end
  if redis.call('EXISTS', '{_CLOSED}' .. sub) == 1 then
    verdict = -1
  elseif open_until and probing <= 0 then
    verdict, wait = 3, open_until - now
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
    if open_until then redis.call('HINCRBY', circuit, 'probes', -1) end
  end
  return verdict, wait
end

-- opened a millisecond on: every attempt out now began before it (nothing passes until the
-- next round, which is opened at its first probe's very millisecond)
local function open(circuit, length)
  redis.call('HSET', circuit, 'until', now + length, 'length', length, 'opened', now + 1,
             'probes', 0)
end

local function leave(sub, token, heard)
  local holders, circuit = '{_HOLDERS}' .. sub, '{_CIRCUIT}' .. sub
  local held = redis.call('ZSCORE', holders, token)
  redis.call('ZREM', holders, token)
  if heard == 1 then
    redis.call('DEL', circuit)
  elseif heard == 0 then
    local began = held and (tonumber(held) - lease) or 0
    local s = redis.call('HMGET', circuit, 'until', 'opened', 'length', 'since')
    if s[1] then
      if began >= tonumber(s[2]) then  -- a probe timed out: open again, longer
        open(circuit, math.min(tonumber(s[3]) * 2, longest))
      end
    else
      local timeouts = redis.call('HINCRBY', circuit, 'timeouts', 1)
      local since = tonumber(s[4])
      if not since then
        since = now
        redis.call('HSET', circuit, 'since', now)
      end
      if timeouts >= after and now - since >= span then open(circuit, cooldown) end
    end
    redis.call('PEXPIRE', circuit, 2 * longest + span)
  end
  local open_until = tonumber(redis.call('HGET', circuit, 'until') or 0)
  return math.max(open_until - now, 0)
end

local out = {{}}
for i = 7, #ARGV, 5 do
  local sub, token = ARGV[i + 1], ARGV[i + 2]
  local verdict, wait = 0, 0
  if ARGV[i] == '1' then
    verdict, wait = enter(sub, token, tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]))
  else
    wait = leave(sub, token, tonumber(ARGV[i + 3]))
  end
  out[#out + 1] = verdict
  out[#out + 1] = wait
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


#: a call at the gate: (request, entering, heard). Entering: True to ask for a pass, False to
#: let go of one; heard, when letting go: whether its receiver answered (False: a timeout;
#: None: neither, nothing was sent or it failed before an answer or a timeout)
Call = tuple[Request, bool, bool | None]

_MAX_REMEMBERED = 10_000  # open circuits a process remembers; beyond, it forgets them all


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Gates:
    """One per process; ``lease``: how long a hold lasts if its holder never lets go."""

    def __init__(
        self, redis: ArqRedis, *, lease: float, breaker: Breaker | None = None, max_batch: int = 400
    ) -> None:
        self.redis = redis
        self.lease_ms = _ms(lease)
        self.breaker = breaker or Breaker()
        self._gate_script = redis.register_script(_GATE)
        self._held_script = redis.register_script(_HELD)
        self._calls: Coalescer[Call, Verdict] = Coalescer(
            self._call, max_batch=max_batch, gather=False
        )
        self._open: dict[str, float] = {}  # subscription → monotonic end of its open circuit

    async def enter(self, request: Request) -> Verdict:
        verdict = await self._calls.submit((request, True, None))
        if verdict.kind is Pass.OPEN:
            self._remember(request.subscription_id, verdict.wait)
        return verdict

    def leave(self, request: Request, heard: bool | None = None) -> asyncio.Future[Verdict]:
        """Let go of the hold; ``heard`` is what the circuit learns from the attempt. Sent
        with the next round trip, which it need not wait for (the returned future is done
        once Redis has it): a pass asked for meanwhile goes in the same call, after it."""
        done = self._calls.put((request, False, heard))
        done.add_done_callback(lambda f: self._left(request.subscription_id, f))
        return done

    def _left(self, subscription_id: str, done: asyncio.Future[Verdict]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._remember(subscription_id, done.result().wait)
        # a release that failed (Redis away) lapses with its hold's lease

    def open_for(self, subscription_id: str) -> float | None:
        """Seconds the subscription's circuit stays open, as this process last heard from
        Redis (None: closed, or not heard of). Checked before anything else is taken for an
        attempt: a job whose owner's share of the worker is all spent on hanging attempts
        still learns to stay away for the circuit's length, not for a busy owner's second."""
        until = self._open.get(subscription_id)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._open[subscription_id]
            return None
        return left

    def _remember(self, subscription_id: str, wait: float) -> None:
        if wait <= 0:
            self._open.pop(subscription_id, None)
            return
        if len(self._open) >= _MAX_REMEMBERED:
            self._open.clear()
        self._open[subscription_id] = time.monotonic() + wait

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

    async def _call(self, calls: Sequence[Call]) -> list[Verdict]:
        b = self.breaker
        args: list[str | int] = [
            self.lease_ms,
            b.probes,
            b.after,
            _ms(b.span),
            _ms(b.cooldown),
            _ms(b.longest),
        ]
        for r, entering, heard in calls:
            if entering:
                args += [1, r.subscription_id, r.token, r.max_in_flight, r.max_per_second or 0]
            else:
                args += [0, r.subscription_id, r.token, -1 if heard is None else int(heard), 0]
        out = await self._gate_script(args=args)
        pairs = zip(out[::2], out[1::2], strict=True)
        return [Verdict(Pass(int(v)), int(w) / 1000) for v, w in pairs]
