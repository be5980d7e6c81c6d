"""What the simulcast side counts, for the metrics collector (`relay.metrics`) to read at
scrape time: process-wide counters and a snapshot per target of a live session.

Nothing here is touched per frame. The attempts and failures are counted as they happen
(each is a connection); the bytes and frames a push sends are the pusher's own `PushStats`,
and the drops are the target queue's own counters: a running session's are read from its
manager when scraped, and its manager folds them into `SimulcastCounters` when it stops, so
the process-wide totals are those of stopped sessions plus the running ones' so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.store.records import SimulcastErrorSeverity, SimulcastTargetStatus


@dataclass(slots=True)
class SimulcastCounters:
    """Process-wide, since the start; one instance shared by every session's manager."""

    attempts: int = 0  # push attempts (connections tried)
    failures_fatal: int = 0  # attempts that failed and are not retried
    failures_normal: int = 0  # attempts that failed and are retried with the backoff
    # Of stopped sessions only (a running session's are in its manager's snapshot):
    sent_bytes: int = 0
    sent_frames: int = 0
    dropped_frames: int = 0
    dropped_bytes: int = 0
    dropped_gops: int = 0


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One target of a running session, as its manager sees it now."""

    target_id: str
    status: SimulcastTargetStatus
    error_severity: SimulcastErrorSeverity | None
    attempts: int  # push attempts in this session
    sent_bytes: int  # written to the target's connections in this session
    sent_frames: int
    queued_bytes: int  # frame data waiting in the target's queue
    dropped_frames: int  # dropped by the target's queue (whole GOPs) in this session
    dropped_bytes: int
    dropped_gops: int
