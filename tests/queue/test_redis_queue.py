"""The Redis client the relay opens: commands packed in C, byte for byte what redis-py sends."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from relay.queue import open_redis, redis_client
from relay.queue.jobs import FIRST_ATTEMPTS_QUEUE
from relay.queue.redis_queue import _PackingInC

ARGS = [
    ("SET", "relay:test:k", "value"),
    ("CLIENT SETNAME", "relay-test"),  # a command name of two words
    (b"CONFIG GET", b"maxmemory"),
    ("ZADD", FIRST_ATTEMPTS_QUEUE, "NX", 1733000000000, "1:1", 2.5, "é:2"),
    ("EVALSHA", "ab" * 20, 1, "key", b"\x00\xff", memoryview(b"view")),
]


@pytest.mark.parametrize("args", ARGS)
def test_packs_what_redis_py_packs(args: tuple[object, ...]) -> None:
    python = Connection()
    in_c = redis_client("redis://127.0.0.1:6379/15").connection_pool.make_connection()
    assert isinstance(in_c, _PackingInC)
    assert b"".join(in_c.pack_command(*args)) == b"".join(
        bytes(part) for part in python.pack_command(*args)
    )
    assert b"".join(in_c.pack_commands([args, args])) == b"".join(
        bytes(part) for part in python.pack_commands([args, args])
    )


def test_what_hiredis_refuses_goes_redis_py_s_way() -> None:
    class Count(int):
        pass

    conn = redis_client("redis://127.0.0.1:6379/15").connection_pool.make_connection()
    assert conn.pack_command("SET", "k", Count(3)) == Connection().pack_command("SET", "k", 3)
    with pytest.raises(DataError, match="Invalid input of type"):
        conn.pack_command("SET", "k", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_keeps_the_kind_of_connection_the_url_asks_for(url: str, kind: type) -> None:
    cls = redis_client(url).connection_pool.connection_class
    assert issubclass(cls, _PackingInC)
    assert issubclass(cls, kind)


async def test_open_redis_talks_to_redis_through_the_c_packer(redis_url: str) -> None:
    client = await open_redis(redis_url)
    try:
        members = {f"{n}:1": n for n in range(5000)}  # a page's worth of jobs in one ZADD
        assert await client.zadd("relay:test:packing", members) == 5000
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard("relay:test:packing")
            pipe.zscore("relay:test:packing", "4999:1")
            pipe.delete("relay:test:packing")
            assert await pipe.execute() == [5000, 4999.0, 1]
        await client.client_setname("relay-test")
        assert await client.client_getname() == "relay-test"
        connection = await client.connection_pool.get_connection()
        assert isinstance(connection, _PackingInC)  # the ping's connection was not kept
        await client.connection_pool.release(connection)
    finally:
        await client.aclose()
