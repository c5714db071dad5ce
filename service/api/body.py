"""Request bodies with a hard size limit (checked while streaming, not after): in the webhook doors, and
for every other route as middleware."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1024 * 1024  # 1 MiB, as the contract says


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"request body over {MAX_BODY} bytes")


async def read_bounded_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: no request body over `limit` reaches a route, whatever the route does with it.

    FastAPI reads (and parses) a route's body before its dependencies run, so without this an admin route
    would buffer a body of any size before the bearer token is even looked at. A declared Content-Length
    over the limit is answered 413 at once; a streamed body fails with `BodyTooLarge` (413) as soon as it
    passes the limit. The webhook doors enforce the same limit themselves, with their own answers.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY, skip_prefix: str = "/webhooks/") -> None:
        self.app, self.limit, self.skip_prefix = app, limit, skip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip_prefix):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": BodyTooLarge().detail}, status_code=413)(scope, receive, send)
            return
        size = 0

        async def bounded_receive() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, bounded_receive, send)
