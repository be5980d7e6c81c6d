"""What test_pusher.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.rtmp.session import (
    Event,
    MediaMessage,
    PublishRequested,
    ServerSession,
    State,
)
from relay.simulcast.pusher import (
    PushLimits,
    TargetAddress,
    parse_target_url,
)

VIDEO = VideoConfig(Codec.H264, b"\x01avcC", 320, 240, "avc1.64001f", 30.0)


AUDIO = AudioConfig(Codec.AAC, b"\x12\x10", 44100, 2, "mp4a.40.2")


@dataclass
class FakeTarget:
    """An RTMP server on Relay's sans-IO ServerSession: accepts (or refuses) every publish
    and records each connection's events. `stall` stops reading once publishing;
    `close_after` closes a connection after that many media messages."""

    refuse: str | None = None
    stall: bool = False
    close_after: int | None = None
    connections: list[list[Event]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: list[asyncio.Task[None]] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> FakeTarget:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._release.set()
        self._server.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self) -> TargetAddress:
        return parse_target_url(f"rtmp://127.0.0.1:{self.port}/app", "key")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.append(task)
        session = ServerSession()
        events: list[Event] = []
        self.connections.append(events)
        try:
            while data := await reader.read(65536):
                session.receive_data(data)
                while True:
                    session.new_turn()
                    while (event := session.next_event()) is not None:
                        events.append(event)
                        if isinstance(event, PublishRequested):
                            if self.refuse:
                                session.refuse_publish(self.refuse)
                            else:
                                session.accept_publish()
                    if not session.turn_spent:
                        break
                writer.write(session.data_to_send())
                if self.stall and session.state is State.PUBLISHING:
                    await self._release.wait()  # never read again
                    return
                media = sum(isinstance(e, MediaMessage) for e in events)
                if self.close_after is not None and media >= self.close_after:
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def media_of(events: list[Event]) -> list[MediaMessage]:
    return [e for e in events if isinstance(e, MediaMessage)]


def gop(start: int, count: int = 10, *, step: int = 33, size: int = 200) -> list[MediaFrame]:
    return [MediaFrame(TrackKind.VIDEO, start + i * step, start + i * step + (66 if i else 0),
                       i == 0, bytes([i]) * size) for i in range(count)]


LIMITS = PushLimits(connect_timeout=5, publish_timeout=5, write_stall_timeout=5)
