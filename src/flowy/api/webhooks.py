"""Webhook routes: endpoints, their secrets, the delivery log, redelivery.

Literal paths (``/webhooks/run-secret``, ``/webhooks/deliveries``) are declared before
``/webhooks/{endpoint_id}`` so they are never read as an id, and endpoint ids only match
ids (``{endpoint_id:id}``): otherwise PATCH or DELETE of a literal path would reach the
endpoint routes (and answer 422 or 404) instead of 405.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor

from flowy.api import schemas as sc
from flowy.api.deps import BodyDep, PlatformDep, WorkspaceDep
from flowy.api.views import iso
from flowy.db.models import WebhookEndpoint
from flowy.services.webhooks import DeliveryInfo

router = APIRouter(prefix="/v1/webhooks")
Data = dict[str, Any]


class _IdConvertor(Convertor[str]):
    """A path segment that is an object id (:mod:`flowy.ids`)."""

    regex = "[0-9a-f]{24}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", _IdConvertor())


def endpoint_view(ep: WebhookEndpoint, secret: str | None = None) -> Data:
    view: Data = {
        "id": ep.id,
        "url": ep.url,
        "events": ep.events,
        "description": ep.description,
        "enabled": ep.enabled,
        "disabledReason": ep.disabled_reason,
        "createdAt": iso(ep.created_at),
        "updatedAt": iso(ep.updated_at),
    }
    if secret is not None:
        view["secret"] = secret
    return view


def delivery_view(info: DeliveryInfo) -> Data:
    d, m = info.delivery, info.message
    return {
        "id": d.id,
        "messageId": m.id,
        "eventType": m.type,
        "runId": m.run_id,
        "endpointId": d.endpoint_id,
        "url": d.url,
        "status": d.status,
        "attemptCount": d.attempts,
        "nextAttemptAt": iso(d.next_attempt_at),
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "createdAt": iso(d.created_at),
        "deliveredAt": iso(d.delivered_at),
        "attempts": [
            {
                "number": a.number,
                "timestamp": a.timestamp,
                "url": a.url,
                "statusCode": a.status_code,
                "error": a.error,
                "response": a.response,
                "durationMs": a.duration_ms,
                "createdAt": iso(a.created_at),
            }
            for a in info.attempts
        ],
    }


# -- the run webhook secret


@router.get(
    "/run-secret", tags=["webhooks"], responses=sc.answers(200, sc.RunWebhookSecretEnvelope)
)
def get_run_secret(p: PlatformDep, ws: WorkspaceDep) -> Data:
    """The secret that signs per-run webhooks (the ``webhook`` of a run request)."""
    return {"data": {"secret": p.webhooks.run_secret(ws)}}


@router.post(
    "/run-secret/rotate",
    tags=["webhooks"],
    responses=sc.answers(200, sc.RunWebhookSecretEnvelope, 413),
)
def rotate_run_secret(p: PlatformDep, ws: WorkspaceDep) -> Data:
    """A new run webhook secret; the previous one also signs for 24 hours."""
    return {"data": {"secret": p.webhooks.rotate_run_secret(ws)}}


# -- deliveries of the whole workspace


def _deliveries(
    p: PlatformDep,
    ws: str,
    endpoint_id: str | None,
    run_id: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Data:
    infos, next_cursor = p.webhooks.list_deliveries(
        ws, endpoint_id=endpoint_id, run_id=run_id, status=status, limit=limit, cursor=cursor
    )
    return {"data": [delivery_view(i) for i in infos], "nextCursor": next_cursor}


@router.get(
    "/deliveries",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookDeliveryPage, 404, 422),
    openapi_extra=sc.DELIVERY_QUERY,
)
def list_deliveries(
    p: PlatformDep,
    ws: WorkspaceDep,
    run_id: Annotated[str | None, Query(alias="runId")] = None,
    endpoint_id: Annotated[str | None, Query(alias="endpointId")] = None,
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> Data:
    """Every delivery of the workspace (per-run webhooks too), newest first."""
    return _deliveries(p, ws, endpoint_id, run_id, status, limit, cursor)


@router.get(
    "/deliveries/{delivery_id}",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookDeliveryEnvelope, 404),
)
def get_delivery(p: PlatformDep, ws: WorkspaceDep, delivery_id: str) -> Data:
    return {"data": delivery_view(p.webhooks.get_delivery(ws, delivery_id))}


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    status_code=202,
    tags=["webhooks"],
    responses=sc.answers(202, sc.WebhookDeliveryEnvelope, 404, 409, 413, e409=sc.REDELIVER_409),
)
def redeliver(p: PlatformDep, ws: WorkspaceDep, delivery_id: str) -> Data:
    """Send the delivery's message again now, with the same ``webhook-id``."""
    return {"data": delivery_view(p.webhooks.redeliver(ws, delivery_id))}


# -- endpoints


@router.post(
    "",
    status_code=201,
    tags=["webhooks"],
    responses=sc.answers(
        201,
        sc.WebhookEndpointWithSecretEnvelope,
        400,
        409,
        413,
        422,
        e409="`conflict`: the workspace already has the most endpoints it may have (50).",
    ),
    openapi_extra=sc.json_body(sc.WebhookEndpointCreate),
)
def create_endpoint(p: PlatformDep, ws: WorkspaceDep, body: BodyDep) -> Data:
    """Make an endpoint from ``{"url", "events"?, "description"?, "enabled"?}``.  The
    answer carries its ``whsec_`` secret, which is never shown again."""
    ep, secret = p.webhooks.create_endpoint(ws, body)
    return {"data": endpoint_view(ep, secret)}


@router.get("", tags=["webhooks"], responses=sc.answers(200, sc.WebhookEndpointList))
def list_endpoints(p: PlatformDep, ws: WorkspaceDep) -> Data:
    return {"data": [endpoint_view(ep) for ep in p.webhooks.list_endpoints(ws)]}


@router.get(
    "/{endpoint_id:id}",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookEndpointEnvelope, 404),
)
def get_endpoint(p: PlatformDep, ws: WorkspaceDep, endpoint_id: str) -> Data:
    return {"data": endpoint_view(p.webhooks.get_endpoint(ws, endpoint_id))}


@router.patch(
    "/{endpoint_id:id}",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookEndpointEnvelope, 400, 404, 413, 422),
    openapi_extra=sc.json_body(sc.WebhookEndpointUpdate),
)
def update_endpoint(p: PlatformDep, ws: WorkspaceDep, endpoint_id: str, body: BodyDep) -> Data:
    """Change ``url``, ``events``, ``description`` or ``enabled``."""
    return {"data": endpoint_view(p.webhooks.update_endpoint(ws, endpoint_id, body))}


@router.delete(
    "/{endpoint_id:id}",
    status_code=204,
    tags=["webhooks"],
    responses=sc.answers(
        204, None, 404, 413, ok_description="Deleted.", ok_rate_limit_headers=False
    ),
)
def delete_endpoint(p: PlatformDep, ws: WorkspaceDep, endpoint_id: str) -> Response:
    p.webhooks.delete_endpoint(ws, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id:id}/rotate-secret",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookEndpointWithSecretEnvelope, 404, 413),
)
def rotate_endpoint_secret(p: PlatformDep, ws: WorkspaceDep, endpoint_id: str) -> Data:
    """A new secret, shown this once; the previous one also signs for 24 hours."""
    ep, secret = p.webhooks.rotate_endpoint_secret(ws, endpoint_id)
    return {"data": endpoint_view(ep, secret)}


@router.get(
    "/{endpoint_id:id}/deliveries",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookDeliveryPage, 404, 422),
    openapi_extra=sc.DELIVERY_QUERY,
)
def list_endpoint_deliveries(
    p: PlatformDep,
    ws: WorkspaceDep,
    endpoint_id: str,
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> Data:
    """The endpoint's delivery log, newest first, each with its attempts."""
    return _deliveries(p, ws, endpoint_id, None, status, limit, cursor)


@router.get(
    "/{endpoint_id:id}/deliveries/{delivery_id}",
    tags=["webhooks"],
    responses=sc.answers(200, sc.WebhookDeliveryEnvelope, 404),
)
def get_endpoint_delivery(
    p: PlatformDep, ws: WorkspaceDep, endpoint_id: str, delivery_id: str
) -> Data:
    return {"data": delivery_view(p.webhooks.get_delivery(ws, delivery_id, endpoint_id))}


@router.post(
    "/{endpoint_id:id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    tags=["webhooks"],
    responses=sc.answers(202, sc.WebhookDeliveryEnvelope, 404, 409, 413, e409=sc.REDELIVER_409),
)
def redeliver_endpoint_delivery(
    p: PlatformDep, ws: WorkspaceDep, endpoint_id: str, delivery_id: str
) -> Data:
    """Send the delivery's message again now, with the same ``webhook-id``."""
    return {"data": delivery_view(p.webhooks.redeliver(ws, delivery_id, endpoint_id))}
