"""Signed webhooks: the Mux envelope and signature, the retry schedule, the deliverer."""

from relay.webhooks.delivery import WebhookDeliverer, WebhookLimits
from relay.webhooks.retry import RetryPolicy
from relay.webhooks.signing import (
    SIGNATURE_HEADER,
    encode_body,
    envelope,
    sign,
    test_envelope,
)

__all__ = [
    "SIGNATURE_HEADER",
    "RetryPolicy",
    "WebhookDeliverer",
    "WebhookLimits",
    "encode_body",
    "envelope",
    "sign",
    "test_envelope",
]
