"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Owns: the `APIError` exception routes raise and the handlers that turn it, validation errors,
malformed JSON and HTTP errors into that body; the request id every response carries
(`x-request-id`), which a 5xx names instead of its cause (the cause goes to the server log with the
same id). Error metrics are labelled by route template, never the raw path (an unknown path is
`unmatched`), so callers cannot create metric series. Does not own: deciding what is an error.
"""

from __future__ import annotations

import logging
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client caused (4xx) or the server could not avoid (5xx), with its reason."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


def error_response(error: APIError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def request_id(request: Request) -> str:
    """This request's id (set by `RequestId`), for log lines and 5xx messages."""
    return str(request.scope.get("state", {}).get("request_id", "-"))


def internal_error(request_id: str, what: str = "internal error") -> APIError:
    """A 5xx that names the request id, never the cause (which is in the server log)."""
    return APIError(
        500, f"{what}; the server log has the details under request id {request_id}", type_="server_error",
        code="internal_error",
    )  # fmt: skip


def _counted(request: Request, response: JSONResponse) -> JSONResponse:
    """Count an error response in the app's request metrics (variant `-`: none answered)."""
    route = request.scope.get("route")
    endpoint = getattr(route, "path", None) or "unmatched"  # a route template, never the raw path
    request.app.state.metrics.requests.labels(endpoint, "-", str(response.status_code)).inc()
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    return response


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, APIError)
        return _counted(request, error_response(error))

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = list(error.errors())
        if any(problem["type"] == "json_invalid" for problem in problems):
            return _counted(
                request,
                error_response(APIError(400, "malformed JSON in the request body", code="invalid_json")),
            )
        first = problems[0]
        location = [str(part) for part in first["loc"] if part != "body"]
        param = ".".join(location) or None
        messages = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc'] if p != 'body') or 'body'}: {problem['msg']}"
            for problem in problems[:5]
        )
        return _counted(request, error_response(APIError(400, messages, param=param, code="invalid_value")))

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return _counted(
            request, error_response(APIError(error.status_code, str(error.detail), code="http_error"))
        )

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        rid = request_id(request)
        logger.error("unhandled error on %s (request id %s)", request.url.path, rid, exc_info=error)
        return _counted(request, error_response(internal_error(rid)))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class RequestId:
    """Give every HTTP request an id (`request.state.request_id`) and send it back in `x-request-id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER.encode()]
                message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
