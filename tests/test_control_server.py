"""The control server in-process on a real Unix socket: idle clients, deep JSON, long streams."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

from renderd.coordinator import protocol
from renderd.coordinator.protocol import Request
from renderd.coordinator.server import READ_TIMEOUT_S, AccessPolicy, ControlServer, Peer, Reply


async def _handler(request: Request, peer: Peer) -> Reply:
    if request.op == "watch":

        async def stream() -> AsyncIterator[bytes]:
            # Longer in all than the read timeout: a stream is not a read and must not be cut.
            for i in range(4):
                await asyncio.sleep(0.4)
                yield protocol.ok(event={"n": i, "final": i == 3})

        return stream()
    return protocol.ok(jobs=[])


async def _server(tmp: Path, read_timeout: float) -> ControlServer:
    server = ControlServer(tmp / "ctl.sock", _handler, AccessPolicy(daemon_uid=os.getuid()), read_timeout=read_timeout)
    await server.start()
    return server


def test_idle_timeout_is_a_named_half_minute() -> None:
    assert READ_TIMEOUT_S == 30.0


async def test_a_client_that_sends_nothing_is_dropped(short_tmp: Path) -> None:
    server = await _server(short_tmp, read_timeout=0.5)
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        # The server closes its end: EOF long before this test's own limit.
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # Others are still served.
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"op": "list"}\n')
        assert json.loads(await asyncio.wait_for(reader.readline(), 10))["ok"] is True
        writer.close()
    finally:
        await server.close()


async def test_a_stream_longer_than_the_idle_timeout_is_not_cut(short_tmp: Path) -> None:
    server = await _server(short_tmp, read_timeout=0.5)
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"op": "watch", "job": "j-0000000000"}\n')
        events = [json.loads(await asyncio.wait_for(reader.readline(), 10))["event"] for _ in range(4)]
        assert [e["n"] for e in events] == [0, 1, 2, 3] and events[-1]["final"]
        writer.close()
    finally:
        await server.close()


async def test_deeply_nested_request_is_bad_json_and_the_connection_stays(short_tmp: Path) -> None:
    server = ControlServer(short_tmp / "ctl.sock", _handler, AccessPolicy(daemon_uid=os.getuid()))
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b"[" * 60_000 + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert reply["ok"] is False and reply["error"]["code"] == "bad_json", reply
        writer.write(b'{"op": "list"}\n')
        assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"ok": True, "jobs": []}
        writer.close()
    finally:
        await server.close()
