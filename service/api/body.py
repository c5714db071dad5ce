"""Request bodies with a hard size limit (checked while streaming, not after): in the webhook doors, and
for every other route as middleware. The middleware also notes, on every route, a client that went away
before sending its whole body (a plain log line: no traceback, and the route stores nothing)."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import get_logger

log = get_logger(__name__)

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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = not scope["path"].startswith(self.skip_prefix)  # the doors answer 413 in their own format
        declared = Headers(scope=scope).get("content-length")
        if limited and declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": BodyTooLarge().detail}, status_code=413)(scope, receive, send)
            return
        size, ended = 0, False

        async def bounded_receive() -> Message:
            nonlocal size, ended
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if limited and size > self.limit:
                    raise BodyTooLarge()
            elif message["type"] == "http.disconnect" and not ended:
                ended = True  # noted once; the route sees starlette's ClientDisconnect and gives up
                log.info("client left before its body was read", method=scope["method"], path=scope["path"],
                         received=size)
            return message

        await self.app(scope, bounded_receive, send)
