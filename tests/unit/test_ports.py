"""free_port: the port it hands out stays taken until the server the test starts binds it."""

from __future__ import annotations

import asyncio
import socket

import pytest
from ports import free_port


class TestFreePort:
    def test_the_port_stays_taken_for_anyone_else(self):
        """Nothing else may bind the port once its number is out (closing it first let any
        bind or outgoing connection take it before the server did)."""
        port = free_port()
        with socket.socket() as other, pytest.raises(OSError) as refused:
            other.bind(("127.0.0.1", port))
        assert "Address already in use" in str(refused.value)

    async def test_a_server_binds_it_and_listens(self):
        """A server binding as asyncio's (SO_REUSEADDR) does listens on it and answers."""
        port = free_port()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"here")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", port)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert b"here" == await reader.read()
            writer.close()

    async def test_nobody_answers_on_a_port_only_reserved(self):
        """A reserved port nobody listens on refuses connections (for 'nobody listens')."""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", free_port())
