"""The HTTP transport: the gateway's API with the tenant's key, sync and async.

The rules (errors, retries, the event stream's order) are plain functions shared by both
classes; each class only moves bytes. Transient failures (connection errors, 429, 502-504)
are retried with exponential backoff and jitter, honouring ``Retry-After``. Submissions
are safe to retry because every request carries an id (the client picks one if the
caller did not), and the gateway is idempotent on it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

from framebus.errors import (
    AuthenticationError,
    ClientError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from framebus.results import GenerationStatus, Progress, StreamItem

RETRIED_STATUS = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S = 20.0


def error_for(response: httpx.Response) -> ClientError:
    """The typed exception for an error response (the gateway's envelope: error.code, message, fields)."""
    try:
        body = response.json().get("error", {})
    except ValueError:
        body = {}
    message = body.get("message") or f"HTTP {response.status_code} from {response.request.url}"
    code, status = body.get("code"), response.status_code
    if status == 401:
        return AuthenticationError(message, code=code)
    if status == 404:
        return NotFoundError(message, code=code)
    if status == 409:
        return ConflictError(message, code=code)
    if status in (413, 422):
        return InvalidRequestError(message, fields=body.get("fields"), status_code=status, code=code)
    if status == 429:
        return RateLimitedError(message, retry_after_s=retry_after(response), code=code)
    if status >= 500:
        return UnavailableError(message, status_code=status, code=code)
    return ClientError(message, status_code=status, code=code)


def retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def backoff_s(attempt: int, response: httpx.Response | None, rng: random.Random) -> float:
    """Before retry ``attempt`` (1, 2, ...): the server's Retry-After, else 0.5 s doubling, with jitter."""
    hinted = retry_after(response) if response is not None else None
    if hinted is not None:
        return min(hinted, MAX_BACKOFF_S)
    return min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + rng.random() / 2)


def generation_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The POST body: the request as given, with an id so a retried submission stays one request.
    The tenant comes from the API key, so a tenant_id in the mapping is dropped."""
    body = {name: value for name, value in request.items() if name != "tenant_id" and value is not None}
    body.setdefault("request_id", new_request_id())
    return body


def new_request_id() -> str:
    return f"sdk-{uuid.uuid4().hex}"


def stream_item(event: str, data: str) -> StreamItem | None:
    """One Server-Sent Event of ``/events`` as a stream item (None: an event this client does not know)."""
    if event == "progress":
        return StreamItem(event, Progress.model_validate_json(data))
    if event in ("status", "completed", "failed", "cancelled"):
        return StreamItem(event, GenerationStatus.model_validate_json(data))
    return None


class _Settings:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float, retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "framebus-sdk"}
        self.timeout = httpx.Timeout(timeout_s)
        # Reading an event stream: the gateway sends a comment every 15 s, so 45 s of silence is a dead link.
        self.stream_timeout = httpx.Timeout(timeout_s, read=45.0)
        self.retries = retries
        self.rng = random.Random()

    def retry_in(self, attempt: int, call: str, *, response: httpx.Response | None = None,
                 error: httpx.TransportError | None = None) -> float:
        """After failed attempt ``attempt``: the seconds to wait before the next one, or the typed
        error to raise (not transient, or no retries left). The sync and async transports share it."""
        if error is not None:
            if attempt > self.retries:
                raise UnavailableError(f"{call}: {error}") from error
        elif response is not None and (response.status_code not in RETRIED_STATUS or attempt > self.retries):
            raise error_for(response)
        return backoff_s(attempt, response, self.rng)


class HttpTransport:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0, retries: int = 4) -> None:
        self.config = _Settings(base_url, api_key, timeout_s=timeout_s, retries=retries)
        self._http = httpx.Client(base_url=self.config.base_url, headers=self.config.headers,
                                  timeout=self.config.timeout)

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One API call with retries on transient failures; raises the typed error otherwise."""
        for attempt in itertools.count(1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                time.sleep(self.config.retry_in(attempt, f"{method} {path}", error=exc))
                continue
            if response.status_code < 400:
                return response
            time.sleep(self.config.retry_in(attempt, f"{method} {path}", response=response))
        raise AssertionError("unreachable")

    def submit(self, request: Mapping[str, Any], traceparent: str | None = None) -> dict:
        headers = {"traceparent": traceparent} if traceparent else {}
        return self.call("POST", "/v1/generations", json=generation_body(request), headers=headers).json()

    def status(self, request_id: str) -> GenerationStatus | None:
        try:
            return GenerationStatus.model_validate_json(self.call("GET", f"/v1/generations/{request_id}").content)
        except NotFoundError:
            return None

    def cancel(self, request_id: str) -> None:
        self.call("POST", f"/v1/generations/{request_id}/cancel")

    def events(self, request_id: str, deadline: float) -> Iterator[StreamItem]:
        """The request's event stream until its terminal event or ``deadline``, reconnecting when the
        link drops (the gateway starts each stream with the current state, so nothing is missed)."""
        attempt = 0
        while time.monotonic() < deadline:
            try:
                with connect_sse(self._http, "GET", f"/v1/generations/{request_id}/events",
                                 timeout=self.config.stream_timeout) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise error_for(source.response)
                    attempt = 0
                    # Keep-alive comments reset the read timeout, so the deadline closes the stream itself.
                    closer = threading.Timer(max(0.0, deadline - time.monotonic()), source.response.close)
                    closer.start()
                    try:
                        for sse in source.iter_sse():
                            if (item := stream_item(sse.event, sse.data)) is not None:
                                yield item
                                if item.terminal:
                                    return
                    finally:
                        closer.cancel()
            except (httpx.TransportError, httpx.StreamClosed, UnavailableError, RateLimitedError):
                if time.monotonic() >= deadline:
                    return
                attempt += 1
                if attempt > self.config.retries:
                    raise
                time.sleep(min(backoff_s(attempt, None, self.config.rng), max(0.0, deadline - time.monotonic())))

    def download(self, video_url: str, path: Path) -> Path:
        """Fetch the video through its stable link (the redirect to S3 carries no API key: httpx
        drops it when the redirect leaves the gateway's origin)."""
        with self._http.stream("GET", video_url, follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
                raise error_for(response)
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return path

    def close(self) -> None:
        self._http.close()


class AsyncHttpTransport:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0, retries: int = 4) -> None:
        self.config = _Settings(base_url, api_key, timeout_s=timeout_s, retries=retries)
        self._http = httpx.AsyncClient(base_url=self.config.base_url, headers=self.config.headers,
                                       timeout=self.config.timeout)

    async def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in itertools.count(1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                await asyncio.sleep(self.config.retry_in(attempt, f"{method} {path}", error=exc))
                continue
            if response.status_code < 400:
                return response
            await asyncio.sleep(self.config.retry_in(attempt, f"{method} {path}", response=response))
        raise AssertionError("unreachable")

    async def submit(self, request: Mapping[str, Any], traceparent: str | None = None) -> dict:
        headers = {"traceparent": traceparent} if traceparent else {}
        return (await self.call("POST", "/v1/generations", json=generation_body(request), headers=headers)).json()

    async def status(self, request_id: str) -> GenerationStatus | None:
        try:
            response = await self.call("GET", f"/v1/generations/{request_id}")
        except NotFoundError:
            return None
        return GenerationStatus.model_validate_json(response.content)

    async def cancel(self, request_id: str) -> None:
        await self.call("POST", f"/v1/generations/{request_id}/cancel")

    async def events(self, request_id: str, deadline: float) -> AsyncIterator[StreamItem]:
        attempt = 0
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    async with aconnect_sse(self._http, "GET", f"/v1/generations/{request_id}/events",
                                            timeout=self.config.stream_timeout) as source:
                        if source.response.status_code >= 400:
                            await source.response.aread()
                            raise error_for(source.response)
                        attempt = 0
                        async for sse in source.aiter_sse():
                            if (item := stream_item(sse.event, sse.data)) is not None:
                                yield item
                                if item.terminal:
                                    return
            except TimeoutError:
                return  # the deadline: the caller raises WaitTimeout
            except (httpx.TransportError, UnavailableError, RateLimitedError):
                if time.monotonic() >= deadline:
                    return
                attempt += 1
                if attempt > self.config.retries:
                    raise
                await asyncio.sleep(min(backoff_s(attempt, None, self.config.rng),
                                        max(0.0, deadline - time.monotonic())))

    async def download(self, video_url: str, path: Path) -> Path:
        async with self._http.stream("GET", video_url, follow_redirects=True) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_for(response)
            with open(path, "wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        return path

    async def close(self) -> None:
        await self._http.aclose()
