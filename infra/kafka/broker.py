"""A real Apache Kafka broker (``kafka.Kafka``) started from jars fetched by Maven.

The jars land in ``<cache>/kafka-<version>/libs`` once and are reused by every later
``up``, test session and CI run on the machine. The broker's data, logs and pid file
live under ``<state>/kafka``; its data survives ``down`` until ``down --purge``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from string import Template

from framebus.infra.errors import FetchError, StaleStateError, StartupError
from framebus.infra.process import file_lock, tcp_answers
from framebus.infra.server import LocalServer, PortSpec

KAFKA_VERSION = "4.3.1"
NODE_ID = 1
_HERE = Path(__file__).parent
POM = _HERE / "pom.xml"
SERVER_PROPERTIES = _HERE / "server.properties"
LOG4J2_CONFIG = _HERE / "log4j2.xml"


def _tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FetchError(f"`{name}` is not on PATH; it is needed to run Kafka locally", install_hint)
    return path


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding, like ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def read_meta_properties(data_dir: Path) -> dict[str, str]:
    meta = data_dir / "meta.properties"
    if not meta.exists():
        return {}
    pairs = (line.split("=", 1) for line in meta.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


class KafkaBroker(LocalServer):
    name = "kafka"
    title = "Kafka broker"

    def __init__(self, *, port: int = 9092, controller_port: int = 9093, heap: str = "512m",
                 version: str = KAFKA_VERSION, maven_args: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.version = version
        self.maven_args = tuple(maven_args)  # e.g. ("-o",) to fetch offline
        self.libs_dir = self.cache_dir / f"kafka-{version}" / "libs"
        self.data_dir = self.state_dir / "data"
        self.config_path = self.state_dir / "server.properties"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def ports(self) -> Sequence[PortSpec]:
        return (PortSpec(self.port, "FRAMEBUS_KAFKA_PORT"),
                PortSpec(self.controller_port, "FRAMEBUS_KAFKA_CONTROLLER_PORT"))

    # --- fetch ------------------------------------------------------------------
    def is_fetched(self) -> bool:
        return (self.libs_dir / ".complete").exists()

    def fetch(self) -> None:
        mvn = _tool("mvn", "install Maven (apt-get install maven) or point FRAMEBUS_KAFKA_BOOTSTRAP at a running cluster")
        with file_lock(self.libs_dir.parent / ".fetch.lock"):
            if self.is_fetched():  # another process fetched while we waited for the lock
                return
            partial = self.libs_dir.with_name("libs.partial")
            shutil.rmtree(partial, ignore_errors=True)
            command = [mvn, "-q", "-B", *self.maven_args, "-f", str(POM), "dependency:copy-dependencies",
                       "-DincludeScope=runtime", f"-Dkafka.version={self.version}", f"-DoutputDirectory={partial}"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                errors = [line for line in done.stdout.splitlines() if "[ERROR]" in line] or done.stderr.splitlines()
                reason = errors[0].replace("[ERROR]", "").strip() if errors else f"exit code {done.returncode}"
                raise FetchError(
                    f"could not fetch Apache Kafka {self.version} jars with Maven: {reason}",
                    "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml) and retry",
                )
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            partial.rename(self.libs_dir)
            (self.libs_dir / ".complete").write_text(self.version)

    # --- prepare ------------------------------------------------------------------
    def prepare(self) -> None:
        cluster_id = self._cluster_id()
        properties = Template(SERVER_PROPERTIES.read_text()).substitute(
            host=self.host, port=self.port, controller_port=self.controller_port, data_dir=self.data_dir,
            listener=self.listener)
        self.config_path.write_text(properties + self.extra_properties())
        if read_meta_properties(self.data_dir):
            return  # already formatted for this cluster
        java = _tool("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        done = subprocess.run(
            [java, "-Xmx256m", "-cp", f"{self.libs_dir}/*", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
             f"-Dkafka.logs.dir={self.state_dir / 'logs'}", "kafka.tools.StorageTool", "format",
             # `=` form: a base64url cluster id may start with "-".
             f"--cluster-id={cluster_id}", "--config", str(self.config_path), *self.format_args()],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StartupError(f"formatting Kafka storage in {self.data_dir} failed: {last[0]}",
                               "run `framebus down --purge` to clear local Kafka data, then `framebus up`")

    # --- what a secured variant changes (infra/kafka/secured.py) ---------------------
    listener = "PLAINTEXT"  # the clients' listener; the controller's stays PLAINTEXT on loopback
    node_id = NODE_ID
    cluster_id: str | None = None  # members of one cluster share it (infra/kafka/cluster.py)

    def extra_properties(self) -> str:
        return ""

    def format_args(self) -> list[str]:
        return []

    def client_options(self) -> dict:
        """kafka-python options a client of this broker needs (the probe is one)."""
        return {}

    def _cluster_id(self) -> str:
        """Reuse the id of an existing log dir; refuse one that belongs to another node."""
        meta = read_meta_properties(self.data_dir)
        if meta:
            if meta.get("node.id") != str(self.node_id) or not meta.get("cluster.id"):
                raise StaleStateError(
                    f"Kafka data dir {self.data_dir} belongs to another node "
                    f"(node.id={meta.get('node.id')!r}, cluster.id={meta.get('cluster.id')!r})",
                    "run `framebus down --purge` to remove the stale local Kafka data",
                )
            return meta["cluster.id"]
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StaleStateError(
                f"Kafka data dir {self.data_dir} is not empty but has no meta.properties",
                "run `framebus down --purge` to remove the stale local Kafka data",
            )
        return self.cluster_id or new_cluster_id()

    # --- run ------------------------------------------------------------------------
    def command(self) -> list[str]:
        java = _tool("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        return [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
                f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
                # Marks the process as framebus's own, for people reading `ps`.
                f"-Dframebus.state.dir={self.state_dir}",
                "-cp", f"{self.libs_dir}/*", "kafka.Kafka", str(self.config_path)]

    def probe(self) -> bool:
        """The broker is ready when it answers metadata and lists itself as a live broker."""
        if not tcp_answers(self.host, self.port):
            return False
        from kafka import KafkaAdminClient  # local: the infra package is importable without clients

        admin = KafkaAdminClient(bootstrap_servers=self.endpoint, request_timeout_ms=3000,
                                 bootstrap_timeout_ms=2000, client_id="framebus-probe", **self.client_options())
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
