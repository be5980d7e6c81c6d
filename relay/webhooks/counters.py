"""What the deliverer counts for /metrics: tries by result, latency, the backlog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from relay.histogram import BucketHistogram

DeliveryResult = Literal["success", "http_error", "timeout", "connection_error",
                         "failed_permanently"]
#: The `result` label of `relay_webhook_deliveries_total`: each try's outcome (a 2xx, another
#: status, no answer within the attempt timeout, no answer at all), and the deliveries given
#: up once their retry window was over (their last try is also counted by its outcome).
DELIVERY_RESULTS: Final[tuple[DeliveryResult, ...]] = get_args(DeliveryResult)

#: Buckets (seconds) of `relay_webhook_delivery_latency_seconds`, from the event's creation
#: to its 2xx: well under a second normally, then the retry schedule's steps (backoff up to
#: an hour between tries, for up to 24 hours).
DELIVERY_LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                   300.0, 1800.0, 3600.0, 6 * 3600.0, 24 * 3600.0)

#: Seconds between the deliverer's counts of its backlog (one store query each), so the
#: queue depth on /metrics is at most this old (plus the query's time).
BACKLOG_COUNT_INTERVAL: Final = 1.0


@dataclass(slots=True)
class WebhookCounters:
    """The deliverer's plain counters, read by the metrics collector at scrape time."""

    results: dict[DeliveryResult, int] = field(
        default_factory=lambda: dict.fromkeys(DELIVERY_RESULTS, 0))
    latency: BucketHistogram = field(
        default_factory=lambda: BucketHistogram(DELIVERY_LATENCY_BUCKETS))
    #: The backlog as last counted (every BACKLOG_COUNT_INTERVAL): events not yet tried for
    #: an endpoint (queued for it, or still past its cursor in the outbox)...
    waiting: int = 0
    #: ...and deliveries that failed at least once and wait for their next try.
    retrying: int = 0
