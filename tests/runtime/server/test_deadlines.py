"""The connection protocol's own parts: one write per answer."""

from __future__ import annotations

import asyncio

from dscloud.server.deadlines import CoalescedWrites


class RecordingTransport:
    """A transport that records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_the_writes_of_one_turn_reach_the_socket_as_one() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[bytes], bool, str]:
        real = RecordingTransport()
        transport = CoalescedWrites(real, asyncio.get_running_loop())
        # when an answer's head and body are written in the same turn
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")
        before = list(real.writes)
        await asyncio.sleep(0)
        after_turn = list(real.writes)
        # and a last answer is written right before the connection closes
        transport.write(b"bye")
        transport.close()
        await asyncio.sleep(0)
        return before, after_turn, real.writes, real.closed, transport.get_extra_info("peername")

    before, after_turn, final, closed, info = asyncio.run(main())
    # then nothing is written mid-turn, the turn's writes go out together, in order, and
    # closing writes what waits before it closes; the rest is the real transport's
    assert before == []
    assert after_turn == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    assert final == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"bye"] and closed
    assert info == "info:peername"
