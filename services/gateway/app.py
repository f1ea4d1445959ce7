"""The gateway's FastAPI app: the only place that reads settings and builds real clients.

    framebus gateway            # uvicorn on FRAMEBUS_GATEWAY_HOST:FRAMEBUS_GATEWAY_PORT

At startup it materializes framebus.tenants from the beginning and framebus.status over its
retention window (FRAMEBUS_STATUS_RETENTION_DAYS: older statuses are gone from the topic, and
never read), and reports ready (GET /readyz) once both have caught up, so any replica answers
any request; start-up time and memory follow the window, not the topic's whole history.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from pydantic import ValidationError

from framebus.client import FramebusClient, SubmitError
from framebus.schemas.state import ErrorCode
from framebus.schemas.validation import FieldError, describe_errors
from framebus.services.batch.submit import BatchRefused
from framebus.services.common.compacted import TopicTable
from framebus.services.common.errors import KafkaAdapterError, StorageError
from framebus.services.common.metrics import configure_metrics
from framebus.services.common.probes import announce
from framebus.services.common.settings import Settings
from framebus.services.common.telemetry import configure
from framebus.services.gateway.events import ProgressTable, Watchers
from framebus.services.gateway.limits import BodySizeLimit
from framebus.services.gateway.ratelimit import RateLimiter, retry_after_header
from framebus.services.gateway.routes import router
from framebus.services.gateway.runtime import Conflict, Gateway, InvalidQuery, NotFound, RateLimited, Unauthenticated
from framebus.services.gateway.tables import BatchTable, StatusTable, TenantTable
from framebus.services.gateway.videos import VideoLinks

GATEWAY_SOURCE = "/framebus/gateway"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure("framebus-gateway", settings.telemetry)
    configure_metrics("framebus-gateway", settings.telemetry)
    watchers = Watchers()  # open event streams, told of every status change and progress line
    status_window_s = settings.status_retention_days * 86400.0
    statuses = StatusTable(on_change=watchers.notify, keep_s=status_window_s)
    tenants, batches = TenantTable(), BatchTable()
    progress = ProgressTable(on_change=watchers.notify)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = await asyncio.to_thread(FramebusClient, settings=settings, source=GATEWAY_SOURCE,
                                         on_accepted=statuses.apply)
        tables = [TopicTable(settings.bootstrap_servers, settings.topic("framebus.status"), statuses.apply_record,
                             since_s=status_window_s),
                  TopicTable(settings.bootstrap_servers, settings.topic("framebus.tenants"), tenants.apply_record),
                  TopicTable(settings.bootstrap_servers, settings.topic("framebus.batches"), batches.apply_record),
                  TopicTable(settings.bootstrap_servers, settings.topic("framebus.batches.progress"),
                             batches.apply_record, since_s=status_window_s),
                  # Progress is worth seconds: only what is written from now on.
                  TopicTable(settings.bootstrap_servers, settings.topic("framebus.progress"), progress.apply_record,
                             from_end=True)]
        for table in tables:
            await table.start()
        app.state.gateway = Gateway(settings=settings, client=client, statuses=statuses, tenants=tenants,
                                    limiter=RateLimiter(clock=time.monotonic), batches=batches, progress=progress,
                                    watchers=watchers, videos=VideoLinks(settings))
        app.state.tables = tables
        announce(settings.state_dir, "framebus-gateway", f"http://127.0.0.1:{settings.gateway_port}")
        try:
            yield
        finally:
            for table in tables:
                await table.stop()
            await asyncio.to_thread(client.close)

    app = FastAPI(title="framebus gateway", version="1.0",
                  description="Submit text-to-video generations, follow them, cancel them, quote them.",
                  lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes,
                       overrides={"/v1/batches": settings.batch_max_bytes})
    app.include_router(router)
    _install_error_handlers(app)
    # A span per request (continuing a caller's `traceparent`) and the HTTP server metrics on /metrics.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app


def _error(status: int, code: str, message: str, fields=(), headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message,
                      "fields": [{"field": f.field, "message": f.message} for f in fields]}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            message = str(error.get("msg", "")).removeprefix("Value error, ")
            if error.get("type") == "json_invalid":  # its loc is a character offset, not a field
                position = next((part for part in error.get("loc", ()) if isinstance(part, int)), None)
                where = f" at character {position}" if position is not None else ""
                problems.append(FieldError("(body)", f"the body is not valid JSON{where}: {error.get('ctx', {}).get('error', message)}"))
                continue
            loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
            problems.append(FieldError(".".join(loc) or "(body)", message))
        code = ErrorCode.INVALID_JSON if any(e.get("type") == "json_invalid" for e in exc.errors()) else ErrorCode.INVALID_REQUEST
        return _error(422, code, _summary(problems), problems)

    @app.exception_handler(ValidationError)
    async def invalid_model(_: Request, exc: ValidationError) -> JSONResponse:
        problems = describe_errors(exc)
        return _error(422, ErrorCode.INVALID_REQUEST, _summary(problems), problems)

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        return _error(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, exc.code, str(exc))

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return _error(429, "rate_limited", str(exc), headers={"Retry-After": retry_after_header(exc.retry_after_s)})

    @app.exception_handler(InvalidQuery)
    async def invalid_query(_: Request, exc: InvalidQuery) -> JSONResponse:
        return _error(422, ErrorCode.INVALID_REQUEST, str(exc))

    @app.exception_handler(BatchRefused)
    async def batch_refused(_: Request, exc: BatchRefused) -> JSONResponse:
        return _error(422, ErrorCode.INVALID_REQUEST, str(exc))

    @app.exception_handler(StorageError)
    async def storage_unavailable(_: Request, exc: StorageError) -> JSONResponse:
        return _error(503, "unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(KafkaAdapterError)
    async def kafka_unreadable(_: Request, exc: KafkaAdapterError) -> JSONResponse:
        return _error(503, "unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(SubmitError)
    async def kafka_unavailable(_: Request, exc: SubmitError) -> JSONResponse:
        return _error(503, "unavailable", str(exc), headers={"Retry-After": "5"})


def _summary(problems) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in problems) or "invalid request"
