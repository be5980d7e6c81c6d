"""HTTPS: the HTTP listener's routes and limits behind TLS, on a port of its own.

asyncio's TLS server (`create_server(ssl=...)`, which uvicorn uses) meets its protocol only
after the handshake, with no deadline of Relay's and no place in the connection table: a
peer that opens sockets and never finishes a ClientHello would hold file descriptors outside
every cap. So, as RTMPS does (relay/rtmp/server.py), the HTTPS listener accepts by itself:
each accepted socket takes a slot in the HTTP listener's `ConnectionTable` at once (counted
as waiting for a request, so a newcomer at the total cap may evict it as it would an idle
keep-alive), and `loop.connect_accepted_socket(ssl=...)` runs the handshake with
`HttpLimits.tls_handshake_timeout`. When the handshake completes, the protocol uvicorn would
have made (the lean playback protocol or the limited h11 one) gives that slot up for its own
in `connection_made` (its `handshake_slot`), in the same call: the count never drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final

from relay.addresses import address_group
from relay.http_limits import Admission, ConnectionTable, HttpCounters, HttpLimits
from relay.logs import LogLimiter, peer_text

log = logging.getLogger("relay.http")

#: Seconds the accept loop pauses after a failed accept (EMFILE), so it does not spin.
ACCEPT_RETRY_SECONDS: Final = 0.1


class _Handshake:
    """An accepted HTTPS connection in its TLS handshake: its place in the table."""

    __slots__ = ("acceptor", "address", "client", "started", "task")

    def __init__(self, acceptor: TlsAcceptor, client: socket.socket, address: str) -> None:
        self.acceptor = acceptor
        self.client = client
        self.address = address
        self.started = False  # the handshake coroutine owns the socket from its first step
        self.task: asyncio.Task[None] | None = None

    def evict(self) -> None:
        self.acceptor.log_limiter.info(
            "https-evicted", "https: closed a connection from %s in its TLS handshake, to "
            "make room for a new one (--http-max-connections %d)", peer_text(self.address),
            self.acceptor.table.max_connections)
        self.cancel()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()  # a running handshake: asyncio closes its transport
        if not self.started:
            self.client.close()


class TlsAcceptor:
    """Accepts on an HTTPS socket, runs each TLS handshake within its deadline and hands
    the connection to a protocol from `protocol_factory` (uvicorn's, for this listener)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, table: ConnectionTable,
                 limits: HttpLimits, counters: HttpCounters,
                 protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self.sock = sock
        self.context = context
        self.table = table
        self.limits = limits
        self.counters = counters
        self.protocol_factory = protocol_factory
        self.log_limiter = LogLimiter(log)
        self._handshakes: set[_Handshake] = set()
        self._acceptor: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._acceptor = asyncio.get_running_loop().create_task(
            self._accept(), name="relay-https-accept")

    @property
    def serving(self) -> bool:
        return self._acceptor is not None and not self._acceptor.done()

    @property
    def handshaking(self) -> int:
        """Connections accepted whose TLS handshake has not ended yet."""
        return len(self._handshakes)

    async def close(self) -> None:
        """Stop accepting and drop the connections still in their handshake."""
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
        for handshake in list(self._handshakes):
            self.table.close(handshake)
            handshake.cancel()
        self._handshakes.clear()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(self.sock)
            except OSError as exc:
                self.log_limiter.log(logging.ERROR, "https-accept-failed",
                                     "https: accept failed: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            try:
                self._accepted(client, peer)
            except Exception:  # a bug of ours: lose this connection, keep the listener
                log.exception("https: could not take an accepted connection")
                client.close()

    def _accepted(self, client: socket.socket, peer: object) -> None:
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        handshake = _Handshake(self, client, address_group(host))
        admission = self.table.open(handshake, handshake.address,
                                    per_address=not self.table.proxies.trusts(host))
        if admission is not Admission.ADMITTED:
            # No 503 before TLS: there is no HTTP to answer in yet.
            self.log_limiter.warning(
                f"https-{admission.name.lower()}", "https: closed a connection from %s on "
                "accept: %s (--http-max-connections %d, --http-max-connections-per-ip %d)",
                peer_text(handshake.address), admission.value, self.table.max_connections,
                self.table.max_per_address)
            client.close()
            return
        self._handshakes.add(handshake)
        handshake.task = asyncio.get_running_loop().create_task(self._handshake(handshake))

    async def _handshake(self, handshake: _Handshake) -> None:
        handshake.started = True
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made = self.protocol_factory()
            made.handshake_slot = handshake  # type: ignore[attr-defined]
            return made

        try:
            await loop.connect_accepted_socket(
                protocol, handshake.client, ssl=self.context,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout)
        except asyncio.CancelledError:
            raise  # evicted or shutting down: the table let it go already
        except Exception as exc:  # a failed or expired handshake: ssl, OS or timeout error
            self.counters.tls_handshake_failures += 1
            self.table.close(handshake)
            self.log_limiter.info(
                "https-handshake-failed", "https: closed a connection from %s: its TLS "
                "handshake failed or took over %g s: %s", peer_text(handshake.address),
                self.limits.tls_handshake_timeout, peer_text(str(exc) or type(exc).__name__))
        finally:
            self._handshakes.discard(handshake)
            handshake.task = None


__all__ = ["ACCEPT_RETRY_SECONDS", "TlsAcceptor"]
