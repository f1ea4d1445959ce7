"""framebus on a secured cluster: a SASL_SSL listener (TLS with a certificate made at start, SCRAM
users, and OAUTHBEARER), the whole chain over it, and a wrong password, an untrusted certificate
or a refused OAuth client each refused fast, in one line that says which, with the password in
no log."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from framebus.client import FramebusClient
from framebus.infra.kafka.secured import SecuredKafkaBroker, self_signed_pem
from framebus.infra.process import free_port, terminate
from framebus.kafka import read_since
from framebus.services.common.children import child_env, launch
from framebus.services.common.settings import LOCAL_HOST, Settings
from framebus.services.common.stack import Stack
from framebus.services.demo.receiver import VerifyingReceiver
from framebus.services.gateway.tenants import TenantAdmin
from framebus.signing import new_key
from tests.infra.secrets import assert_no_secret_in_logs

PASSWORD = f"pw-{uuid.uuid4().hex}"
SERVICE_KEY = new_key()  # on a SASL bus the scheduler admits signed requests only: this test's client is a service


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, infra_cache_dir: Path) -> Iterator[SecuredKafkaBroker]:
    secured = SecuredKafkaBroker(users={"framebus": PASSWORD}, oauth=True, host=LOCAL_HOST, port=free_port(),
                                 controller_port=free_port(), heap="384m",
                                 state_dir=tmp_path_factory.mktemp("secured-kafka"), cache_dir=infra_cache_dir)
    secured.start()
    try:
        yield secured
    finally:
        secured.stop()


def secured(server_settings: Settings, broker: SecuredKafkaBroker, **changes) -> Settings:
    return server_settings.model_copy(update={
        "kafka_bootstrap": broker.endpoint, "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "framebus",
        "kafka_sasl_password": SecretStr(PASSWORD), "kafka_ssl_cafile": broker.cafile,
        "topic_prefix": f"sec.{uuid.uuid4().hex[:8]}.", "s3_bucket": f"sec-{uuid.uuid4().hex[:8]}", "tenant": "acme",
        "webhook_http_hosts": frozenset({"127.0.0.1"}), "webhook_allowed_hosts": frozenset({"127.0.0.1"}),
        "service_signing_key": SecretStr(SERVICE_KEY), **changes})


def test_submit_scheduler_worker_metering_and_notifier_all_run_over_sasl_ssl(
        server_settings: Settings, broker: SecuredKafkaBroker, tmp_path: Path) -> None:
    settings = secured(server_settings, broker)
    Stack(settings).up()
    client = FramebusClient(settings=settings, source="/tests")
    admin = TenantAdmin(client)
    admin.create("acme")
    admin.credit("acme", 10_000)
    receiver = VerifyingReceiver(admin.rotate_webhook_secret("acme").secrets[0])
    processes = [launch(settings, args, tmp_path / f"{args[0]}.log") for args in (
        ["scheduler"], ["metering"], ["notifier"],
        ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "sec-w", "--heartbeat-s", "0.5"])]
    try:
        handles = client.submit_many([{"request_id": f"sec-{n}", "prompt": "a red circle moving left",
                                       "webhook_url": receiver.url} for n in range(5)])
        results = [handle.wait(timeout=120) for handle in handles]
        assert [r.state.value for r in results] == ["completed"] * 5
        deadline = time.monotonic() + 60
        while len(usage := read_since(settings.bootstrap_servers, settings.topic("framebus.usage"), 600)) < 5 \
                and time.monotonic() < deadline:
            time.sleep(0.5)  # metering settles each result a moment after it lands
        assert len(usage) == 5, "metering settled each request over the secured listener"
        deadline = time.monotonic() + 60
        while receiver.request_ids() != {f"sec-{n}" for n in range(5)} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.request_ids() == {f"sec-{n}" for n in range(5)}
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        receiver.close()
        client.close()
    assert_no_secret_in_logs(tmp_path, {"the password": PASSWORD})


@pytest.mark.parametrize(("problem", "expected"), [
    ("password", "authentication failed: the cluster refused user 'framebus' (SCRAM-SHA-512)"),
    ("certificate", "TLS: the broker's certificate is not trusted"),
])
def test_a_wrong_password_or_an_untrusted_certificate_fails_fast_in_one_clear_line(
        server_settings: Settings, broker: SecuredKafkaBroker, tmp_path: Path, problem: str, expected: str) -> None:
    change = ({"kafka_sasl_password": SecretStr("not-the-password")} if problem == "password"
              else {"kafka_ssl_cafile": self_signed_pem(tmp_path / "other.pem")})
    settings = secured(server_settings, broker, **change)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "up"], env=child_env(settings),
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(expected in line for line in errors), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and PASSWORD not in done.stdout + done.stderr
    assert took < 30, f"took {took:.0f}s to give up"


def test_the_reason_is_found_by_a_probe_when_the_client_only_saw_the_socket_close(
        server_settings: Settings, broker: SecuredKafkaBroker, tmp_path: Path) -> None:
    """Under load a client may read the closed socket before the broker's refusal: nothing logged."""
    from framebus import kafka

    for change, expected in (({"kafka_sasl_password": SecretStr("not-the-password")},
                              "authentication failed: the cluster refused user 'framebus' (SCRAM-SHA-512)"),
                             ({"kafka_ssl_cafile": self_signed_pem(tmp_path / "other.pem")},
                              "TLS: the broker's certificate is not trusted")):
        settings = secured(server_settings, broker, **change)
        kafka._FAILURES.recent.clear()
        assert expected in (kafka.why_unreachable(settings.bootstrap_servers) or ""), change


OAUTH_CLIENT, OAUTH_SECRET = "framebus-app", f"cs-{uuid.uuid4().hex}"


class TokenEndpoint:
    """An identity provider's token endpoint on loopback: the client-credentials grant for one
    client, answered with an unsecured JWS (what the broker's default OAUTHBEARER validator takes)."""

    def __init__(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                expected = "Basic " + base64.b64encode(f"{OAUTH_CLIENT}:{OAUTH_SECRET}".encode()).decode()
                endpoint.asked += 1
                if "grant_type=client_credentials" not in body or self.headers.get("Authorization") != expected:
                    return self._answer(401, {"error": "invalid_client"})
                now = int(time.time())
                part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
                token = f"{part({'alg': 'none'})}.{part({'sub': OAUTH_CLIENT, 'iat': now, 'exp': now + 3600})}."
                self._answer(200, {"access_token": token, "token_type": "bearer", "expires_in": 3600})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.asked = 0
        self.server = ThreadingHTTPServer((LOCAL_HOST, free_port()), Handler)
        self.url = f"http://{LOCAL_HOST}:{self.server.server_port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


def oauth(server_settings: Settings, broker: SecuredKafkaBroker, endpoint: TokenEndpoint, **changes) -> Settings:
    return secured(server_settings, broker, **{
        "kafka_sasl_mechanism": "OAUTHBEARER", "kafka_sasl_username": OAUTH_CLIENT,
        "kafka_sasl_password": SecretStr(OAUTH_SECRET), "kafka_sasl_oauth_token_url": endpoint.url, **changes})


def test_kafka_python_aiokafka_and_faust_clients_all_log_in_with_oauth_tokens(
        server_settings: Settings, broker: SecuredKafkaBroker, token_endpoint: TokenEndpoint, tmp_path: Path) -> None:
    settings = oauth(server_settings, broker, token_endpoint)
    Stack(settings).up()  # kafka-python's admin client
    client = FramebusClient(settings=settings, source="/tests")
    admin = TenantAdmin(client)
    admin.create("acme")
    admin.credit("acme", 1_000)
    processes = [launch(settings, args, tmp_path / f"{args[0]}.log") for args in (  # faust hosting aiokafka clients
        ["scheduler"], ["worker", "--engine", "null", "--model", "wan-shapes", "--worker-id", "oauth-w",
                        "--heartbeat-s", "0.5"])]
    try:
        handles = client.submit_many([{"request_id": f"oauth-{n}", "prompt": "a red circle moving left"}
                                      for n in range(3)])
        assert [handle.wait(timeout=120).state.value for handle in handles] == ["completed"] * 3
    finally:
        for process in processes:
            terminate(process.pid, timeout_s=10)
        client.close()
    # Each process asks for a token once and reuses it for all its connections (an hour's token).
    assert 3 <= token_endpoint.asked <= 6, token_endpoint.asked
    assert_no_secret_in_logs(tmp_path, {"the client secret": OAUTH_SECRET})


def test_a_refused_oauth_client_fails_fast_in_one_clear_line(
        server_settings: Settings, broker: SecuredKafkaBroker, token_endpoint: TokenEndpoint) -> None:
    settings = oauth(server_settings, broker, token_endpoint, kafka_sasl_password=SecretStr("not-the-secret"))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "framebus.services.cli.main", "up"], env=child_env(settings),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    assert time.monotonic() - started < 30
    expected = f"OAUTHBEARER: the token endpoint refused client '{OAUTH_CLIENT}' at {token_endpoint.url} (401 invalid_client)"
    assert any(expected in line for line in done.stderr.splitlines()), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "not-the-secret" not in done.stdout + done.stderr
