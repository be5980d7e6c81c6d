"""`/system/v1/webhook-events`: what the deliverer did with each event, for operators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from relay.api.deps import API_ERRORS, Limit, Page, StoreDep, answers, basic_auth_doc, envelope
from relay.api.responses import WebhookEventListResponse
from relay.store.records import JSONDict, WebhookDelivery
from relay.webhooks.signing import iso_time

router = APIRouter(prefix="/system/v1", tags=["webhooks"],
                   dependencies=[Depends(basic_auth_doc)], responses=API_ERRORS)


def delivery_to_api(delivery: WebhookDelivery) -> JSONDict:
    event = delivery.event
    return {
        "id": event.id,
        "type": event.type,
        "object": {"type": event.object_type, "id": event.object_id},
        "created_at": iso_time(event.created_at),
        "endpoint": delivery.endpoint,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "next_attempt_at": (iso_time(delivery.next_attempt_at)
                            if delivery.status == "pending" else None),
        "delivered_at": (iso_time(delivery.delivered_at)
                         if delivery.delivered_at is not None else None),
    }


@router.get("/webhook-events",
            **answers(200, WebhookEventListResponse, "One page of deliveries", 400),
            summary="List webhook deliveries, newest event first")
async def list_webhook_events(
    store: StoreDep,
    limit: Limit = 25,
    page: Page = 1,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    found = await store.list_webhook_deliveries(limit=limit, page=page, status=status,
                                                event_type=type, object_id=object_id)
    return envelope([delivery_to_api(d) for d in found])
