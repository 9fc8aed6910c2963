"""What every webhook endpoint does with a request before its own work: the raw body within
its bound (signatures cover the exact bytes), the JSON in it, the Standard Webhooks headers;
and the JSON answer when it is refused. Shared by the completions webhook, xAPI (web/app.py)
and the bounce webhook (web/bounces.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from pshnotify.ingest import webhook_signing as signing

MAX_BODY = 1024 * 1024  # a completion is a few hundred bytes; a batch of statements, more


class HttpError(Exception):
    """Refuse the request with `status` and a JSON body naming every problem."""

    def __init__(
        self,
        status: int,
        error: str,
        problems: Sequence[str] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.problems = list(problems)
        self.headers = headers
        super().__init__(error)


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    body: dict[str, Any] = {"error": exc.error}
    if exc.problems:
        body["problems"] = exc.problems
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def read_body(request: Request) -> bytes:
    """The raw bytes (signatures cover them exactly), refused beyond MAX_BODY."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    except ClientDisconnect:  # gone, or cut for being too slow (web/bounds.py)
        raise HttpError(400, "the request body did not arrive") from None
    return bytes(body)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise HttpError(400, "the body is not valid JSON") from None


def delivery_headers(request: Request) -> signing.Delivery:
    h = request.headers
    values = {name: h.get(name, "") for name in signing.HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise HttpError(401, f"missing headers: {', '.join(missing)}")
    if len(values["webhook-id"]) > 255:
        raise HttpError(400, "webhook-id: longer than 255 characters")
    return signing.Delivery(
        values["webhook-id"], values["webhook-timestamp"], values["webhook-signature"]
    )
