"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Owns: the `APIError` exception routes raise and the handlers that turn it, validation errors,
malformed JSON and HTTP errors into that body. Does not own: deciding what is an error.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client caused (4xx) or the server could not avoid (5xx), with its reason."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


def error_response(error: APIError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status)


def _counted(request: Request, response: JSONResponse) -> JSONResponse:
    """Count an error response in the app's request metrics (variant `-`: none answered)."""
    metrics = request.app.state.metrics
    metrics.requests.labels(request.url.path, "-", str(response.status_code)).inc()
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
        logger.exception("unhandled error on %s", request.url.path)
        return _counted(
            request, error_response(APIError(500, f"internal error: {error}", type_="server_error"))
        )

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
