"""What the SRT listen callback answers a caller: accept (with the stream's passphrase) or reject.

`decide(streamid, address)` (relay/srt/admission.py) returns one of these; the listener
(relay/srt/listener.py) applies it to the new socket before libsrt completes the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SrtAccept:
    """Let the caller in; with a passphrase, the handshake fails unless the caller has it too."""

    passphrase: str | None


@dataclass(frozen=True, slots=True)
class SrtReject:
    """Refuse the caller before the handshake completes.

    `code` is the application part of the reject reason (SRT_REJC_PREDEFINED + code is sent,
    e.g. 1403 forbidden, 1404 not found, 1409 conflict, 1429 too many); the caller logs it.
    `reason` is for Relay's own log line and is never sent."""

    code: int
    reason: str
