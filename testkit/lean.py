"""The lean playback server (`relay.hls.serve`) on a real socket in the test's loop, with
uvicorn's h11 protocol running an ASGI app as its fallback: what `relay serve` runs on its
HTTP port, without the rest of the process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.types import ASGIApp
from uvicorn.server import ServerState

from relay.hls.serve import PlaybackServer, playback_protocol
from relay.http_limits import HttpCounters, HttpLimits, limited_protocol


@contextlib.asynccontextmanager
async def serving_protocol(app: object, protocol: type[asyncio.Protocol] | str,
                           closing: Callable[[], object] = lambda: None) -> AsyncIterator[str]:
    """`app` served by `protocol` (a uvicorn HTTP protocol class, such as one a listener
    makes, or uvicorn's name for one: "h11") on 127.0.0.1 in the test's loop, as `relay
    serve` runs it on its HTTP port; yields "127.0.0.1:PORT". At the end open connections
    are shut down and given half a second to go, then `closing()` is called, then the
    server is waited for."""
    config = uvicorn.Config(app, log_config=None, access_log=False,  # type: ignore[arg-type]
                            lifespan="off", ws="none", http=protocol)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: config.http_protocol_class(config=config, server_state=state,  # type: ignore[call-arg]
                                           app_state={}, _loop=loop), "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for connection in list(state.connections):
            connection.shutdown()
        for _ in range(50):
            if not state.connections:
                break
            await asyncio.sleep(0.01)
        closing()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving_lean(app: ASGIApp, playback: PlaybackServer,
                       limits: HttpLimits | None = None,
                       counters: HttpCounters | None = None,
                       trusted: Callable[[str], bool] | None = None) -> AsyncIterator[str]:
    """Serve on 127.0.0.1; yields the base URL. `trusted`: the table's node addresses."""
    limits = limits if limits is not None else HttpLimits()
    limited = limited_protocol(limits, counters)
    if trusted is not None:
        limited.table.nodes = trusted
    protocol = playback_protocol(limits, limited.table, playback, limited)
    async with serving_protocol(app, protocol, closing=playback.close) as address:
        yield f"http://{address}"
