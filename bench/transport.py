"""Benchmark: which HTTP transport should carry webhooks? (run it; it is not a test)

    .venv/bin/python bench/transport.py [--seconds 5] [--concurrency 10,50,200] [--uvloop]

Starts a minimal ASGI receiver (raw ASGI, 204) under uvicorn in a subprocess, so it gets its own
core, then for each client and concurrency runs that many workers, each looping "build the body,
sign it, POST it, read the answer" for a fixed time, and prints POSTs/s and the ratio to bare
aiohttp. Clients: plain ``httpx.AsyncClient``, httpx over the ``httpx-aiohttp`` transport (if
installed), a bare ``aiohttp.ClientSession``, and the relay's ``WebhookSender``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from relay.delivery.sender import WebhookSender  # noqa: E402
from relay.delivery.signing import generate_secret, webhook_body, webhook_headers  # noqa: E402
from relay.delivery.targets import TargetPolicy  # noqa: E402

RECEIVER = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools", lifespan="off",
            backlog=4096)
"""

SECRET = generate_secret()
DISTRICT = "58da8a43cc70ab00017a1a87"


def _event() -> dict[str, Any]:
    """A users.updated event shaped like Clever's, padded to ~2 KB of JSON."""
    student = {
        "credentials": {"district_username": "douglasw58"},
        "dob": "6/18/1998",
        "enrollments": [],
        "ext": {"gifted_status": "Y", "notes": "n" * 1300},
        "gender": "M",
        "grade": "9",
        "school": "58da8c58155b940248000007",
        "schools": ["58da8c58155b940248000007"],
        "sis_id": "101565758",
        "state_id": "498006597",
        "student_number": "101565758",
    }
    return {
        "created": "2023-03-26T16:09:41.000Z",
        "data": {
            "object": {
                "created": "2020-11-10T17:07:22.188Z",
                "district": DISTRICT,
                "email": "w_douglas@example.net",
                "id": "58da8c63d7dc0ca0680003ee",
                "name": {"first": "Douglas", "last": "Wisoky", "middle": "S"},
                "roles": {"student": student},
            },
            "previous_attributes": {"roles": {"student": {"ext": {"gifted_status": ""}}}},
        },
        "id": "64206e4531f12f05cc490fa5",
        "type": "users.updated",
    }


EVENT = _event()


def signed_request() -> tuple[dict[str, str], bytes]:
    """What the delivery job does per attempt: serialise and sign."""
    body = webhook_body(EVENT, DISTRICT)
    return webhook_headers([SECRET], EVENT["id"], body), body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("receiver did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        proc.terminate()
        proc.wait(10)


Post = Callable[[str, dict[str, str], bytes], Awaitable[int]]


@contextlib.asynccontextmanager
async def httpx_plain(concurrency: int) -> Any:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=15) as client:

        async def post(url: str, headers: dict[str, str], body: bytes) -> int:
            return (await client.post(url, content=body, headers=headers)).status_code

        yield post


@contextlib.asynccontextmanager
async def httpx_over_aiohttp(concurrency: int) -> Any:
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=15) as client:

        async def post(url: str, headers: dict[str, str], body: bytes) -> int:
            return (await client.post(url, content=body, headers=headers)).status_code

        yield post


@contextlib.asynccontextmanager
async def aiohttp_bare(concurrency: int) -> Any:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(url: str, headers: dict[str, str], body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        yield post


@contextlib.asynccontextmanager
async def webhook_sender(concurrency: int) -> Any:
    async with WebhookSender(timeout=15, policy=TargetPolicy()) as sender:

        async def post(url: str, headers: dict[str, str], body: bytes) -> int:
            outcome = await sender.send(url, headers, body)
            if outcome.error and not outcome.succeeded and outcome.status_code is None:
                raise RuntimeError(outcome.error)
            return outcome.status_code or 0

        yield post


CLIENTS: dict[str, Callable[[int], Any]] = {
    "httpx.AsyncClient": httpx_plain,
    "httpx + httpx-aiohttp": httpx_over_aiohttp,
    "aiohttp (bare)": aiohttp_bare,
    "WebhookSender": webhook_sender,
}


async def run_case(
    make: Callable[[int], Any], url: str, concurrency: int, seconds: float, warmup: float
) -> tuple[float, float, int]:
    """POSTs/s over ``seconds`` after ``warmup``, client CPU microseconds per POST (whole
    run; steadier than wall-clock rates on a shared machine), and failures (non-204/errors)."""
    async with make(concurrency) as post:
        start = time.perf_counter()
        cpu_start = time.process_time()
        measure_from = start + warmup
        stop_at = measure_from + seconds
        counted = 0
        total = 0
        failures = 0

        async def worker() -> None:
            nonlocal counted, total, failures
            while True:
                headers, body = signed_request()
                try:
                    status = await post(url, headers, body)
                except Exception:
                    status = -1
                total += 1
                now = time.perf_counter()
                if now >= stop_at:
                    return
                if now >= measure_from:
                    counted += 1
                    if status != 204:
                        failures += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu_us = (time.process_time() - cpu_start) / max(total, 1) * 1e6
        return counted / seconds, cpu_us, failures


def _available(name: str) -> bool:
    if name != "httpx + httpx-aiohttp":
        return True
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per case")
    parser.add_argument("--concurrency", default="10,50,200")
    parser.add_argument("--uvloop", action="store_true", help="run the clients on uvloop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run

    t = time.perf_counter()
    n = 2000
    for _ in range(n):
        signed_request()
    per_request_us = (time.perf_counter() - t) / n * 1e6
    _, sample_body = signed_request()
    print(
        f"body {len(sample_body)} bytes; serialise+sign {per_request_us:.1f} us/request; "
        f"client loop: {'uvloop' if args.uvloop else 'asyncio'}; cpus {os.cpu_count()}; "
        f"{args.seconds:g}s per case"
    )

    results: dict[str, dict[int, tuple[float, float, int]]] = {}
    with receiver() as url:
        for name, make in CLIENTS.items():
            if not _available(name):
                print(f"skipping {name}: not installed")
                continue
            for c in levels:
                rate, cpu_us, failures = runner(run_case(make, url, c, args.seconds, args.warmup))
                results.setdefault(name, {})[c] = (rate, cpu_us, failures)
                print(
                    f"  {name:<24} c={c:<4} {rate:>8.0f}/s  client CPU {cpu_us:6.1f} us/POST"
                    f"  failures={failures}",
                    flush=True,
                )

    base = results.get("aiohttp (bare)", {})
    header = f"{'client':<24}" + "".join(f"{'c=' + str(c):>26}" for c in levels)
    print()
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        cells = []
        for c in levels:
            rate, cpu_us, _ = row[c]
            ratio = rate / base[c][0] if base.get(c) and base[c][0] else float("nan")
            cells.append(f"{rate:>6.0f}/s {ratio:>4.2f}x {cpu_us:>5.0f}us")
        print(f"{name:<24}" + "".join(f"{cell:>26}" for cell in cells))
    print(
        "(POSTs/s; ratio to bare aiohttp at the same concurrency; client CPU us per POST,"
        f" including ~{per_request_us:.0f} us to serialise and sign)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    n: {
                        str(c): {"rate": r, "cpu_us_per_post": u, "failures": f}
                        for c, (r, u, f) in row.items()
                    }
                    for n, row in results.items()
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
