"""ASGI middleware capping requests: headers (431) and bodies (413, before the app reads more than
the limit, chunked or not), answered in the gateway's one error shape."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


MAX_HEADER_BYTES = 16 * 1024  # all request headers together; browsers and proxies stay far below


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None,
                 max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}  # path -> its own cap (batch file uploads)
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            await _send_error(send, 431, "headers_too_large",
                              f"request headers take {header_bytes} bytes; at most {self.max_header_bytes} are read")
            return
        limit = self.overrides.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                exceeded = True
                raise BodyTooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            # A framework may catch BodyTooLarge while it parses and answer on its own (FastAPI: 400);
            # the answer to an oversized body is 413 in our shape whatever the app made of it.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        await _send_error(send, 413, "payload_too_large", f"request body exceeds {limit} bytes")


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "fields": []}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
