"""The notifier on the real broker, delivering to real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from framebus.client import FramebusClient
from framebus.schemas.webhooks import WebhookDead, WebhookSecrets
from framebus.services.common.settings import Settings
from framebus.services.gateway.tenants import TenantAdmin
from framebus.services.notifier.queries import _read, attempts_for, replay_dead
from framebus.services.notifier.service import Notifier
from tests.services.metering.test_core import cancelled, completed, failed, request
from tests.waiting import eventually

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """An HTTP endpoint that answers from a script of status codes (the last one repeats)."""

    def __init__(self, statuses: list[int], *, delay_s: float = 0.0) -> None:
        self.statuses, self.delay_s = list(statuses), delay_s
        self.calls: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self) -> list[dict]:
        return [Webhook(SECRET).verify(body, headers) for headers, body in self.calls]


@pytest.fixture
def notifier_settings(provisioned_settings: Settings) -> Settings:
    settings = provisioned_settings.model_copy(update={"webhook_allowed_hosts": frozenset({"127.0.0.1"}),
                                                       "webhook_retry_schedule_s": (0.2, 0.2, 0.2)})
    with FramebusClient(settings=settings, source="/tests") as client:
        TenantAdmin(client).create("acme")
        client.publish(WebhookSecrets(tenant_id="acme", secrets=(SECRET,)), "framebus.webhooks.secrets").get(10)
    return settings


@pytest.fixture
def running(notifier_settings: Settings) -> Iterator[Notifier]:
    notifier = Notifier(notifier_settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(notifier.run(max_seconds=180),), daemon=True)
    thread.start()
    yield notifier
    loop.call_soon_threadsafe(notifier.stop)
    thread.join(timeout=30)


def publish(settings: Settings, *results) -> None:
    with FramebusClient(settings=settings, source="/framebus/worker") as client:
        for result in results:
            client.publish(result, "framebus.results").get(10)


def with_hook(result, url: str):
    return result.model_copy(update={"webhook_url": url})


def test_a_failing_receiver_gets_the_same_signed_delivery_until_it_answers_2xx(running, notifier_settings):
    receiver = Receiver([500, 503, 200])
    publish(notifier_settings, with_hook(completed(request(1)), receiver.url))
    assert eventually(lambda: running.delivered == 1, timeout_s=60)
    assert len(receiver.calls) == 3
    assert len({headers["webhook-id"] for headers, _ in receiver.calls}) == 1, "webhook-id stable across retries"
    assert [v["type"] for v in receiver.verified()] == ["generation.completed"] * 3
    log = attempts_for(notifier_settings, "r-1")
    assert [(a.attempt, a.outcome, a.status_code) for a in log] == [(1, "retry", 500), (2, "retry", 503),
                                                                     (3, "delivered", 200)]


def test_every_outcome_gets_exactly_one_delivery_each(running, notifier_settings):
    receiver = Receiver([200])
    publish(notifier_settings, *(with_hook(make(request(n)), receiver.url)
                                 for n, make in enumerate((completed, failed, cancelled), start=10)))
    assert eventually(lambda: running.delivered == 3, timeout_s=60)
    types = sorted(v["type"] for v in receiver.verified())
    assert types == ["generation.cancelled", "generation.completed", "generation.failed"]
    assert len({h["webhook-id"] for h, _ in receiver.calls}) == 3


def test_a_receiver_that_fails_forever_ends_dead_and_replay_delivers_it(running, notifier_settings):
    receiver = Receiver([500])
    publish(notifier_settings, with_hook(failed(request(20)), receiver.url))
    dead = lambda: [e for e in _read(notifier_settings, "framebus.webhooks.dead") if isinstance(e, WebhookDead)]  # noqa: E731
    assert eventually(lambda: len(dead()) == 1, timeout_s=60)
    assert len(receiver.calls) == 4, "one attempt and three retries on the compressed schedule"
    assert "HTTP 500 after 4 attempts" in dead()[0].reason
    receiver.statuses = [200]
    assert replay_dead(notifier_settings, request_id="r-20") == 1
    assert eventually(lambda: running.delivered == 1, timeout_s=60)
    assert len({h["webhook-id"] for h, _ in receiver.calls}) == 1


def test_410_disables_the_endpoint_for_that_tenant(running, notifier_settings):
    receiver = Receiver([410])
    publish(notifier_settings, with_hook(completed(request(30)), receiver.url))
    with FramebusClient(settings=notifier_settings, source="/tests") as client:
        admin = TenantAdmin(client)
        assert eventually(lambda: receiver.url in admin.get("acme").disabled_webhook_urls, timeout_s=60)
    publish(notifier_settings, with_hook(completed(request(31)), receiver.url))
    assert eventually(lambda: any(a.outcome == "disabled" for a in attempts_for(notifier_settings, "r-31")), 60)
    assert len(receiver.calls) == 1, "nothing more is sent to a disabled endpoint"


def test_a_private_address_is_refused_without_a_request(running, notifier_settings):
    publish(notifier_settings, with_hook(completed(request(40)), "https://10.0.0.1/hook"))
    assert eventually(lambda: any(a.outcome == "refused" for a in attempts_for(notifier_settings, "r-40")), 60)
    [attempt] = attempts_for(notifier_settings, "r-40")
    assert "non-public" in attempt.error


def test_a_slow_endpoint_does_not_delay_another_tenants_deliveries(running, notifier_settings):
    slow, fast = Receiver([200], delay_s=8.0), Receiver([200])
    publish(notifier_settings, *(with_hook(completed(request(n)), slow.url) for n in range(50, 56)))
    publish(notifier_settings, with_hook(completed(request(60)), fast.url))
    started = time.monotonic()
    assert eventually(lambda: len(fast.calls) == 1, timeout_s=30)
    assert time.monotonic() - started < 5, "the fast endpoint was served while the slow one was still busy"
    assert len(slow.calls) <= 4, "at most 4 at once per endpoint"


def test_a_receiver_slower_than_the_timeout_is_retried_until_it_answers_in_time(notifier_settings):
    settings = notifier_settings.model_copy(update={"webhook_timeout_s": 1.0})
    receiver = Receiver([200], delay_s=2.0)  # like a 200 after 20 s against the 15 s default
    notifier = Notifier(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(notifier.run(max_seconds=120),), daemon=True)
    thread.start()
    try:
        publish(settings, with_hook(completed(request(70)), receiver.url))
        assert eventually(lambda: len(attempts_for(settings, "r-70")) >= 1, timeout_s=60)
        receiver.delay_s = 0.0
        assert eventually(lambda: notifier.delivered == 1, timeout_s=60)
        log = attempts_for(settings, "r-70")
        assert log[0].outcome == "retry" and "Timeout" in log[0].error and log[-1].outcome == "delivered"
    finally:
        loop.call_soon_threadsafe(notifier.stop)
        thread.join(timeout=30)


def test_an_unreachable_receiver_is_retried_and_a_restart_loses_nothing(notifier_settings):
    settings = notifier_settings.model_copy(update={"webhook_retry_schedule_s": (1.5, 1.5, 1.5)})
    receiver = Receiver([200])
    port = receiver.server.server_address[1]
    receiver.server.shutdown()
    receiver.server.server_close()  # nothing listens: connection refused

    def run_notifier(seconds: float) -> Notifier:
        notifier = Notifier(settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(notifier.run(max_seconds=seconds),),
                                  daemon=True)
        thread.start()
        notifier.thread = thread
        return notifier

    first = run_notifier(120)
    publish(settings, with_hook(completed(request(80)), f"http://127.0.0.1:{port}/hook"))
    assert eventually(lambda: len(attempts_for(settings, "r-80")) >= 1, timeout_s=60)
    first.stop()
    first.thread.join(timeout=30)
    assert attempts_for(settings, "r-80")[0].outcome == "retry"
    # The endpoint comes back on the same port, and a new notifier picks up the pending delivery.
    revived = Receiver([200])
    revived.server.shutdown()
    revived.server.server_close()
    revived.server = ThreadingHTTPServer(("127.0.0.1", port), revived.server.RequestHandlerClass)  # same port
    threading.Thread(target=revived.server.serve_forever, daemon=True).start()
    second = run_notifier(120)
    try:
        assert eventually(lambda: second.delivered == 1, timeout_s=60)
        assert len(revived.calls) == 1
    finally:
        second.stop()
        second.thread.join(timeout=30)


def test_a_second_terminal_result_for_a_request_sends_no_second_webhook_even_after_a_restart(notifier_settings):
    """A worker declared dead (silent past the timeout) can still report later, after its requests
    ran elsewhere: the request's first result in the partition's order gets the webhook; a late
    one, whatever its outcome, gets none, also when it lands after the notifier restarted."""
    receiver = Receiver([200])

    def run_notifier() -> tuple[Notifier, threading.Thread]:
        notifier = Notifier(notifier_settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(notifier.run(max_seconds=120),), daemon=True)
        thread.start()
        return notifier, thread

    notifier, thread = run_notifier()
    first = with_hook(completed(request(90)), receiver.url)
    publish(notifier_settings, first, first, with_hook(failed(request(90)), receiver.url))
    assert eventually(lambda: notifier.delivered == 1, timeout_s=60)
    time.sleep(2)  # the two later results would be delivered by now
    notifier.stop()
    thread.join(timeout=30)
    # Restarted, the notifier remembers from the attempts topic; a third late result sends nothing.
    notifier, thread = run_notifier()
    try:
        assert eventually(lambda: notifier.is_ready(), timeout_s=60)
        publish(notifier_settings, with_hook(completed(request(90)), receiver.url),
                with_hook(completed(request(91)), receiver.url))
        assert eventually(lambda: notifier.delivered == 1, timeout_s=60), "request 91 still gets its webhook"
        time.sleep(2)
    finally:
        notifier.stop()
        thread.join(timeout=30)
    assert sorted(v["data"]["request_id"] for v in receiver.verified()) == ["r-90", "r-91"]
    assert receiver.verified()[0]["type"] == "generation.completed", "the first result's outcome"
