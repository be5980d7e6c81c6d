"""The client TLS context of rtmps:// simulcast targets, made when the first one connects.

The context trusts the system's CAs (with hostname checks), plus the bundle of
--simulcast-ca-file when given. Loading the system's CAs takes about 30 ms of CPU and holds
about 1 MiB (their 140-odd certificates, parsed): a relay whose streams have no rtmps://
target needs neither, so the context is made on the first rtmps:// connection, in a thread
(not on the event loop, where the sessions' media is), and shared from then on.
The bundle of --simulcast-ca-file is still read at start-up (`check_ca_file`), so a file
that cannot be used stops the start naming the option, as before.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from relay.simulcast.pusher import TargetError


def check_ca_file(ca_file: Path) -> None:
    """Raise OSError or ssl.SSLError when `ca_file` is not a bundle of PEM CA certificates
    (read into a context of its own, without the system's CAs, and let go)."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca_file)


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A context trusting the system's CAs and those of `ca_file` (OSError or ssl.SSLError
    when it cannot be read)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


class TargetTls:
    """The one client context of rtmps:// targets, made by the first `context()` call."""

    def __init__(self, ca_file: Path | None = None) -> None:
        self.ca_file = ca_file
        self._context: ssl.SSLContext | None = None
        self._making: asyncio.Task[ssl.SSLContext] | None = None

    @property
    def made(self) -> bool:
        return self._context is not None

    async def context(self) -> ssl.SSLContext:
        """The context, made in a thread on the first call (the calls made meanwhile wait
        for that one). TargetError ("normal": the next attempt tries again) when the CA
        bundle, read fine at start-up, cannot be read now."""
        if self._context is not None:
            return self._context
        if self._making is None:
            self._making = asyncio.create_task(asyncio.to_thread(client_context, self.ca_file),
                                               name="simulcast-tls-context")
            self._making.add_done_callback(self._made)
        making = self._making
        try:
            # Shielded: a push cancelled while it waits leaves the making to the others.
            self._context = await asyncio.shield(making)
        except (OSError, ssl.SSLError) as exc:
            if self._making is making:
                self._making = None
            raise TargetError("normal", f"cannot load the CA bundle {str(self.ca_file)!r} "
                              f"for rtmps:// targets: {exc}") from None
        return self._context

    def _made(self, making: asyncio.Task[ssl.SSLContext]) -> None:
        # Kept even when every push that waited was cancelled meanwhile; a failure is seen
        # here (so never "never retrieved") and raised to the waiters by their await.
        if not making.cancelled() and making.exception() is None:
            self._context = making.result()
