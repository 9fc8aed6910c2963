"""POST /webhooks/bounces: bounce and complaint events from a sending service's callbacks.

Signed like the completions webhook (Standard Webhooks), with PSHNOTIFY_BOUNCE_WEBHOOK_SECRET
or, unset, PSHNOTIFY_WEBHOOK_SECRET. Body: {"message_id", "recipient", "type": "hard" | "soft"
| "complaint", "status", "diagnostic"}. 200 recorded, 202 no message of ours (nothing changed),
400 bad body or stale timestamp, 401 bad signature, 409 replayed webhook-id, 503 not set up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pshnotify.clock import Clock
from pshnotify.domain.bounces import ENHANCED_CODE, BounceClass, classify
from pshnotify.ingest import webhook_signing as signing
from pshnotify.services.bounces.marks import Recorded, record_event
from pshnotify.settings import Settings
from pshnotify.web.webhook_io import HttpError, delivery_headers, parse_json, read_body

log = logging.getLogger(__name__)
_TYPES = ("hard", "soft", "complaint")


@dataclass(frozen=True)
class _Event:
    message_id: str
    recipient: str
    cls: BounceClass
    status: str | None
    diagnostic: str


def bounce_routes(engine: Engine, clock: Clock, settings: Settings) -> list[Route]:
    secret = settings.bounce_webhook_secret or settings.webhook_secret
    key = signing.parse_secret(secret.get_secret_value()) if secret else None
    soft_days = settings.bounce_soft_days

    async def endpoint(request: Request) -> Response:
        if key is None:
            raise HttpError(
                503, "bounce webhooks are not configured: set PSHNOTIFY_BOUNCE_WEBHOOK_SECRET"
            )
        body = await read_body(request)
        delivery = delivery_headers(request)
        try:
            signing.verify(key, delivery, body, clock.wall())
        except signing.VerificationError as exc:
            raise HttpError(exc.status, str(exc)) from None
        event = _event(parse_json(body))
        result = await run_in_threadpool(
            lambda: record_event(
                engine,
                clock,
                receipt=delivery.msg_id,
                message_id=event.message_id,
                recipient=event.recipient,
                cls=event.cls,
                status=event.status,
                diagnostic=event.diagnostic,
                soft_days=soft_days,
            )
        )
        if result is None:
            raise HttpError(409, f"webhook-id {delivery.msg_id!r} was received before; ignored")
        log.info("bounce webhook %s: %s", delivery.msg_id, result.outcome.value)
        status = 202 if result.outcome == Recorded.UNMATCHED else 200
        return JSONResponse(
            {
                "outcome": result.outcome.value,
                "class": event.cls.value,
                "marked_undeliverable": result.marked is not None,
            },
            status_code=status,
        )

    return [Route("/webhooks/bounces", endpoint, methods=["POST"])]


def _event(data: Any) -> _Event:
    if not isinstance(data, dict):
        raise HttpError(400, "bad bounce", ["(body): expected a JSON object"])
    problems: list[str] = []

    def text(name: str, required: bool, limit: int) -> str | None:
        value = data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            problems.append(f"{name}: expected a {'non-empty ' if required else ''}string")
            return None
        if len(value) > limit:
            problems.append(f"{name}: longer than {limit} characters")
            return None
        return value.strip()

    message_id = text("message_id", True, 255)
    recipient = text("recipient", True, 320)
    kind = text("type", True, 16)
    status = text("status", False, 32)
    diagnostic = text("diagnostic", False, 2000) or ""
    if kind is not None and kind not in _TYPES:
        problems.append(f"type: expected one of {', '.join(_TYPES)}; got {kind!r}")
    if recipient is not None and "@" not in recipient:
        problems.append("recipient: expected an email address")
    if status and not ENHANCED_CODE.fullmatch(status.strip()):
        problems.append(f"status: expected an RFC 3463 code such as 5.1.1; got {status!r}")
    if problems or message_id is None or recipient is None or kind is None:
        raise HttpError(400, "bad bounce", problems)
    cls = (
        BounceClass.COMPLAINT
        if kind == "complaint"
        else classify(status, diagnostic, permanent=kind == "hard")
    )
    return _Event(message_id, recipient, cls, status or None, diagnostic)
