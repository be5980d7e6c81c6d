"""A simulcast target's status as one transition table (MUX-API.md "SimulcastTarget").

Theory of operation: a target is `idle` until its stream becomes active; then each attempt
to push is `starting` (connecting, handshaking, publishing) until the target answers
NetStream.Publish.Start (`broadcasting`). A failing attempt, before or after that, makes it
`errored` with an `error_severity`: `normal` (network trouble) is retried after a backoff,
which starts the next attempt (`starting` again); `fatal` (a refused key, a bad URL, a
certificate that does not verify) is final for the session. The end of the session, from
any status, makes it `idle` again.

    idle --connect--> starting --published--> broadcasting
                        |  ^                      |
                   failed  +------retry-----+     | failed
                        v                   |     v
                      errored(severity) <-------- +
    (any) --stop--> idle

The machine is pure: the manager (`relay.simulcast.manager`) feeds it and writes each
change to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.store.records import SimulcastErrorSeverity, SimulcastTargetStatus


class TargetInput(StrEnum):
    CONNECT = "connect"  # the stream became active: the first attempt begins
    PUBLISHED = "published"  # the target answered NetStream.Publish.Start
    FAILED = "failed"  # the attempt failed (with a severity)
    RETRY = "retry"  # the backoff after a normal error is over: the next attempt begins
    STOP = "stop"  # the session ended (or the push finished its stream)


TRANSITIONS: dict[tuple[SimulcastTargetStatus, TargetInput], SimulcastTargetStatus] = {
    ("idle", TargetInput.CONNECT): "starting",
    ("starting", TargetInput.PUBLISHED): "broadcasting",
    ("starting", TargetInput.FAILED): "errored",
    ("broadcasting", TargetInput.FAILED): "errored",
    ("errored", TargetInput.RETRY): "starting",
    **{(status, TargetInput.STOP): "idle"
       for status in ("idle", "starting", "broadcasting", "errored")},
}


class TargetStatusError(RuntimeError):
    """Relay fed the machine an input its status does not accept (a bug, not a peer's)."""


@dataclass(slots=True)
class TargetMachine:
    """One target's status and, while `errored`, the severity of its error."""

    status: SimulcastTargetStatus = "idle"
    error_severity: SimulcastErrorSeverity | None = None

    def handle(self, event: TargetInput,
               severity: SimulcastErrorSeverity | None = None) -> bool:
        """Apply `event` (FAILED needs its `severity`); True when the status or severity
        changed, i.e. when there is something to write."""
        if (event is TargetInput.FAILED) != (severity is not None):
            raise TargetStatusError(f"{event} with severity {severity}: only failed has one")
        if event is TargetInput.RETRY and self.error_severity == "fatal":
            raise TargetStatusError("a fatal error is not retried")
        try:
            new_status = TRANSITIONS[(self.status, event)]
        except KeyError:
            raise TargetStatusError(f"{event} is not accepted in status {self.status}") from None
        before = (self.status, self.error_severity)
        self.status, self.error_severity = new_status, severity
        return (self.status, self.error_severity) != before
