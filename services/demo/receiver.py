"""A webhook receiver for the demo: verifies each delivery with the standardwebhooks library."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class VerifyingReceiver:
    """Listens on 127.0.0.1; answers 204 to deliveries whose signature verifies, 400 otherwise."""

    def __init__(self, secret: str) -> None:
        self.verified: dict[str, dict] = {}  # webhook-id -> payload
        self.rejected = 0
        receiver, webhook = self, Webhook(secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    payload = webhook.verify(body, {k.lower(): v for k, v in self.headers.items()})
                    receiver.verified[self.headers["webhook-id"]] = payload
                    status = 204
                except WebhookVerificationError:
                    receiver.rejected += 1
                    status = 400
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/framebus-demo"
        threading.Thread(target=self.server.serve_forever, name="demo-receiver", daemon=True).start()

    def request_ids(self) -> set[str]:
        return {payload["data"]["request_id"] for payload in self.verified.values()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
