"""The deliverer: one task per endpoint, working that endpoint's rows of the store.

Theory of operation: each endpoint's task queues the outbox's new events for it (its cursor
moves in the same transaction), claims the deliveries that are due, at most one per object
(the oldest pending event of that object, so an object's events arrive in order) and at most
`max_in_flight` together, POSTs each with a fresh signature, and writes the outcome: 2xx is
delivered; anything else is retried after `RetryPolicy`'s wait, or failed once its window
is over. A row is marked delivered only after the 2xx, so a crash in between sends it again:
at least once, with the event id stable. Each endpoint has its own task and HTTP client, so
a slow or dead one only holds itself; the media path never waits for any of this (events are
written with the changes they report, and read back here).

Several nodes on one PostgreSQL database each run a deliverer over the same rows (issue 19).
The queueing is serialized on the endpoint's row, so an event is queued once per endpoint;
a claim (a token and an expiry, taken FOR UPDATE SKIP LOCKED) makes each try one node's;
an object's next event waits while its earlier one is pending, claimed or not; and an
outcome is written only under the claim it was tried with. A node that dies mid-try leaves
its claims to lapse after `claim_timeout`, then another node sends those events again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay.logs import LogLimiter, peer_text
from relay.store import Store
from relay.store.records import JSONDict, WebhookDelivery, WebhookDeliveryStatus
from relay.webhooks.counters import BACKLOG_COUNT_INTERVAL, DeliveryResult, WebhookCounters
from relay.webhooks.retry import RetryPolicy
from relay.webhooks.signing import (
    SIGNATURE_HEADER,
    attempt_record,
    encode_body,
    envelope,
    sign,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("relay.webhooks")
# httpx logs every request at info: a line per webhook try would drown the server's own.
logging.getLogger("httpx").setLevel(logging.WARNING)
_FAILURES = LogLimiter(log)

#: Seconds one POST may take, connect to last byte, before it counts as a failure (Mux's).
DEFAULT_ATTEMPT_TIMEOUT = 5.0
#: Deliveries of one endpoint in flight at once (each of another object).
DEFAULT_MAX_IN_FLIGHT = 8
#: Longest an endpoint's task sleeps before looking for new events.
DEFAULT_POLL_INTERVAL = 0.5
#: Seconds a claim on a delivery lasts: the try (at most `attempt_timeout`) and the write of
#: its outcome must fit in it; a node that dies mid-try holds its deliveries this long.
DEFAULT_CLAIM_TIMEOUT = 30.0
#: How long a delivered or failed event is kept for GET /system/v1/webhook-events.
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: How often old events are pruned.
PRUNE_INTERVAL = 600.0
#: Tries listed in the envelope's `attempts` and kept in the row: the newest ones.
MAX_ATTEMPTS_LISTED = 10
#: Characters of a receiver's answer or error kept as `last_error`.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    retention: float = DEFAULT_RETENTION
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    claim_timeout: float = DEFAULT_CLAIM_TIMEOUT

    def __post_init__(self) -> None:
        if not self.claim_timeout > self.attempt_timeout > 0:
            raise ValueError(
                f"a webhook claim must outlast a try: claim_timeout {self.claim_timeout} s "
                f"must be longer than attempt_timeout {self.attempt_timeout} s (and that > 0)")


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one POST came to: a status code, or an error before any answer."""

    status_code: int | None
    error: str | None
    timed_out: bool = False  # no answer within the attempt timeout

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def result(self) -> DeliveryResult:
        """The try's outcome as /metrics counts it."""
        if self.delivered:
            return "success"
        if self.status_code is not None:
            return "http_error"
        return "timeout" if self.timed_out else "connection_error"


async def post_signed(client: httpx.AsyncClient, url: str, secret: str, body: bytes,
                      now: float) -> tuple[AttemptOutcome, httpx.Response | None]:
    """POST `body` signed at `now`; never raises for what the network or the peer does."""
    import httpx  # loaded with `client`

    headers = {"Content-Type": "application/json",
               SIGNATURE_HEADER: sign(secret, body, int(now))}
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return AttemptOutcome(None, "timed out", timed_out=True), None
    except httpx.HTTPError as exc:
        return AttemptOutcome(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]), None
    if 200 <= response.status_code < 300:
        return AttemptOutcome(response.status_code, None), response
    answer = peer_text(response.text, MAX_ERROR_CHARS)
    return AttemptOutcome(response.status_code,
                          f"HTTP {response.status_code}: {answer}"), response


def _cancelling() -> bool:
    """Whether this task is being cancelled: a cancel that lands inside a store query may
    come out as SQLAlchemy's error about the connection it left unusable instead, and the
    loops that retry after errors must not swallow it (`stop` would wait forever)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class WebhookDeliverer:
    """Delivers the outbox to `endpoints`, signed with `secret`; `start()`, then `stop()`.

    It wakes when the store has written new events (`Store.on_events_written`), and polls
    every `poll_interval` all the same (a write of another process, a missed wake-up)."""

    def __init__(self, store: Store, endpoints: Sequence[str], secret: str, *,
                 limits: WebhookLimits | None = None,
                 clock: Callable[[], float] = time.time,
                 draw: Callable[[], float] = random.random,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._store = store
        self.endpoints = tuple(dict.fromkeys(endpoints))
        self._secret = secret
        self.limits = limits or WebhookLimits()
        self._clock = clock
        self._draw = draw
        self._transport = transport
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: dict[str, asyncio.Event] = {}
        self.delivered = 0
        self.failed_attempts = 0
        self.counters = WebhookCounters()
        #: Claims taken and not yet written back: released on `stop`.
        self._claims: set[str] = set()
        self._unlisten: Callable[[], None] | None = None

    async def start(self) -> None:
        await self._store.set_webhook_endpoints(self.endpoints)
        if self._store.single_node:
            # No other node shares the database: claims in it are an earlier run's, cut
            # short by a kill; their deliveries go now rather than after the claim timeout.
            await self._store.release_webhook_claims()
        if self.endpoints:
            # At start-up, not in the tasks' first step on a serving loop; a relay without
            # an endpoint never loads httpx (`tests/unit/test_startup_imports.py`).
            importlib.import_module("httpx")
        for url in self.endpoints:
            self._wake[url] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(url), name=f"webhooks {url}"))
        self._tasks.append(asyncio.create_task(self._prune_forever(), name="webhooks prune"))
        if self.endpoints:
            self._tasks.append(asyncio.create_task(self._count_backlog_forever(),
                                                   name="webhooks backlog"))
            self._unlisten = self._store.on_events_written(self.wake)

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        for event in self._wake.values():
            event.set()

    async def stop(self) -> None:
        """Cancel the tasks; a POST cut short stays pending and is sent again (by this node
        next run or by another now: its claim is released)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        claims, self._claims = sorted(self._claims), set()
        if claims:
            try:
                await self._store.release_webhook_claims(claims)
            except Exception as exc:  # they lapse after claim_timeout all the same
                _FAILURES.warning("release", "releasing %d webhook claim(s): %s",
                                  len(claims), exc)

    async def _run(self, url: str) -> None:
        import httpx  # loaded by start

        timeout = httpx.Timeout(self.limits.attempt_timeout)
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport,
                                     follow_redirects=False) as client:
            while True:
                try:
                    await self.work_once(url, client)
                    await self._sleep(url)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store was busy or down: try again later
                    if _cancelling():
                        raise asyncio.CancelledError from exc
                    _FAILURES.warning("store", "webhooks to %s: %s; trying again",
                                      peer_text(url), exc)
                    await asyncio.sleep(self.limits.poll_interval)

    async def work_once(self, url: str, client: httpx.AsyncClient) -> int:
        """Queue new events, claim the due deliveries of `url` that no other deliverer holds
        and try each once; return how many."""
        await self._store.queue_webhook_deliveries(url)
        due = await self._store.claim_webhook_deliveries(
            url, self._clock(), limit=self.limits.max_in_flight,
            claim_for=self.limits.claim_timeout)
        claims = {d.claim for d in due if d.claim is not None}
        self._claims.update(claims)
        try:
            await asyncio.gather(*(self._attempt(client, d) for d in due))
        finally:
            # Written back, or (the store failed) left to lapse: not this deliverer's to
            # release any more, and the set stays as small as the tries in flight. Cut short
            # by `stop`, they are still held: `stop` releases them.
            if not _cancelling():
                self._claims.difference_update(claims)
        return len(due)

    async def _sleep(self, url: str) -> None:
        wait = self.limits.poll_interval
        due = await self._store.next_webhook_attempt_at(url)
        if due is not None:
            wait = max(0.0, min(wait, due - self._clock()))
        wake = self._wake[url]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), wait)
        wake.clear()

    async def _attempt(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        body = encode_body(envelope(delivery.event, delivery.attempt_log))
        started = self._clock()
        outcome, _ = await post_signed(client, delivery.endpoint, self._secret, body, started)
        now = self._clock()
        first = delivery.first_attempt_at if delivery.first_attempt_at is not None else started
        attempts = delivery.attempts + 1
        tried = attempt_record(delivery.endpoint, started, outcome.status_code, outcome.error)
        attempt_log = (*delivery.attempt_log, tried)[-MAX_ATTEMPTS_LISTED:]
        self.counters.results[outcome.result] += 1
        if outcome.delivered:
            self.delivered += 1
            self.counters.latency.observe(max(0.0, now - delivery.event.created_at))
            await self._record(
                delivery, status="delivered", attempts=attempts, next_attempt_at=now,
                first_attempt_at=first, last_error=delivery.last_error,
                attempt_log=attempt_log, delivered_at=now)
            return
        self.failed_attempts += 1
        retry_at = self.limits.retry.next_attempt_at(
            first_attempt_at=first, attempts=attempts, now=now, draw=self._draw())
        if retry_at is None:
            self.counters.results["failed_permanently"] += 1
            log.warning("webhook %s (%s) to %s failed after %d attempts: %s",
                        delivery.event.id, delivery.event.type, peer_text(delivery.endpoint),
                        attempts, outcome.error)
        await self._record(
            delivery, status="pending" if retry_at is not None else "failed",
            attempts=attempts, next_attempt_at=retry_at if retry_at is not None else now,
            first_attempt_at=first, last_error=outcome.error, attempt_log=attempt_log)

    async def _record(self, delivery: WebhookDelivery, *, status: WebhookDeliveryStatus,
                      attempts: int, next_attempt_at: float, first_attempt_at: float,
                      last_error: str | None, attempt_log: Sequence[JSONDict],
                      delivered_at: float | None = None) -> None:
        """Write a try's outcome under the claim it was made with."""
        if delivery.claim is None:  # claim_webhook_deliveries sets it on every row it returns
            raise ValueError(f"webhook delivery {delivery.seq} was tried without a claim")
        if not await self._store.record_webhook_attempt(
                delivery.seq, claim=delivery.claim, status=status, attempts=attempts,
                next_attempt_at=next_attempt_at, first_attempt_at=first_attempt_at,
                last_error=last_error, attempt_log=attempt_log, delivered_at=delivered_at):
            _FAILURES.warning(
                "claim", "webhook %s to %s: its claim was gone when the try ended (it "
                "outlasted the %g s claim, which another deliverer took, or the endpoint was "
                "removed); the outcome is not written", delivery.event.id,
                peer_text(delivery.endpoint), self.limits.claim_timeout)

    async def count_backlog(self) -> None:
        """Count the endpoints' backlog into `counters` (one store query)."""
        backlog = await self._store.webhook_backlog(self.endpoints)
        self.counters.waiting = backlog.waiting
        self.counters.retrying = backlog.retrying

    async def _count_backlog_forever(self) -> None:
        while True:
            try:
                await self.count_backlog()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _cancelling():
                    raise asyncio.CancelledError from exc
                _FAILURES.warning("backlog", "counting the webhook backlog: %s", exc)
            await asyncio.sleep(BACKLOG_COUNT_INTERVAL)

    async def prune(self) -> int:
        """Drop delivered and failed events older than the retention; return how many."""
        return await self._store.prune_webhook_events(self._clock() - self.limits.retention)

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("pruned %d webhook event(s) older than %g s", pruned,
                             self.limits.retention)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _cancelling():
                    raise asyncio.CancelledError from exc
                _FAILURES.warning("prune", "pruning webhook events: %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL)
