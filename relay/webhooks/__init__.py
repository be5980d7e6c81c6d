"""Signed webhooks: the Mux envelope and signature, the retry schedule, the deliverer."""

from relay.webhooks.delivery import WebhookDeliverer, WebhookLimits
from relay.webhooks.retry import RetryPolicy
from relay.webhooks.signing import (
    SIGNATURE_HEADER,
    check_envelope,
    encode_body,
    envelope,
    sign,
)

__all__ = [
    "SIGNATURE_HEADER",
    "RetryPolicy",
    "WebhookDeliverer",
    "WebhookLimits",
    "check_envelope",
    "encode_body",
    "envelope",
    "sign",
]
