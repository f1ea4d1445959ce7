"""versitygw: an S3 gateway serving a local directory, built once with ``go install``.

Chosen over s3proxy (Maven Central) because it is one static binary that starts in
milliseconds and needs no second JVM beside Kafka; both passed create-bucket, multipart
upload and SigV4 presigned GET. The binary is cached as ``<cache>/versitygw-<version>/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import httpx

from framebus.infra.errors import FetchError
from framebus.infra.process import file_lock
from framebus.infra.server import LocalServer, PortSpec

VERSITYGW_VERSION = "v1.8.0"
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"


class S3Server(LocalServer):
    name = "s3"
    title = "S3 server (versitygw)"

    def __init__(self, *, port: int = 7070, access_key: str, secret_key: str, region: str = "us-east-1",
                 version: str = VERSITYGW_VERSION, **kwargs) -> None:
        super().__init__(**kwargs)
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.version = version
        self.bin_dir = self.cache_dir / f"versitygw-{version}"
        self.binary = self.bin_dir / "versitygw"
        self.data_dir = self.state_dir / "data"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ports(self) -> Sequence[PortSpec]:
        return (PortSpec(self.port, "FRAMEBUS_S3_PORT"),)

    def is_fetched(self) -> bool:
        return self.binary.exists() and os.access(self.binary, os.X_OK)

    def fetch(self) -> None:
        go = shutil.which("go")
        if go is None:
            raise FetchError("`go` is not on PATH; it is needed to build the local S3 server (versitygw)",
                             "install Go 1.24+ (apt-get install golang-go, or go.dev) or set FRAMEBUS_S3_ENDPOINT")
        with file_lock(self.bin_dir.parent / ".versitygw.lock"):
            if self.is_fetched():
                return
            partial = self.bin_dir.with_name(self.bin_dir.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            env = {**os.environ, "GOBIN": str(partial), "CGO_ENABLED": "0"}
            done = subprocess.run([go, "install", "-trimpath", f"{VERSITYGW_MODULE}@{self.version}"],
                                  capture_output=True, text=True, env=env, timeout=1200)
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                reason = lines[-1] if lines else f"exit code {done.returncode}"
                raise FetchError(f"could not build versitygw {self.version} with `go install`: {reason}",
                                 "check that the Go module proxy is reachable (GOPROXY) and retry")
            shutil.rmtree(self.bin_dir, ignore_errors=True)
            partial.rename(self.bin_dir)

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        # Credentials go through the environment (env()), not argv, so `ps` does not show them.
        return [str(self.binary), "--port", f"{self.host}:{self.port}", "--region", self.region,
                "posix", str(self.data_dir)]

    def env(self) -> Mapping[str, str]:
        return {"ROOT_ACCESS_KEY_ID": self.access_key, "ROOT_SECRET_ACCESS_KEY": self.secret_key}

    def probe(self) -> bool:
        # Any S3 answer (an unsigned request gets 403 AccessDenied) proves the gateway serves.
        response = httpx.get(f"{self.endpoint}/", timeout=1.0)
        return response.status_code in (200, 403)
