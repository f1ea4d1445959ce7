"""One typed settings object for every service, read from ``FRAMEBUS_*`` environment variables.

With no configuration framebus runs *embedded*: ``framebus up`` starts a local Kafka
broker and S3 server on 127.0.0.1. Setting ``FRAMEBUS_KAFKA_BOOTSTRAP`` or
``FRAMEBUS_S3_ENDPOINT`` points it at existing ones instead, and nothing is started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from framebus.config import LOCAL_HOST, ClientSettings, blank_is_unset
from framebus.schemas import topics
from framebus.schemas.state import Tier
from framebus.schemas.webhooks import RETRY_SCHEDULE_S
from framebus.services.common.watchdog import WatchdogConfig

__all__ = ["LOCAL_HOST", "Replication", "Settings", "render_markdown"]


@dataclass(frozen=True)
class Replication:
    """Copies of each record, and how many must have it before a write counts (acks=all)."""

    factor: int = 1
    min_insync: int = 1


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "framebus"


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "framebus"


class Settings(ClientSettings):
    """Everything an operator can set (the client's settings first). Each field is documented in the README's table."""

    model_config = SettingsConfigDict(env_prefix="FRAMEBUS_", env_file=None, frozen=True, extra="ignore")

    # --- Kafka ---------------------------------------------------------------------
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of the local broker.")
    kafka_heap: str = Field("512m", pattern=r"^\d+[mg]$", description="JVM heap of the local broker.")
    kafka_replication_factor: int | None = Field(
        None, ge=1, description="Copies of every topic's records; unset: 1 on the local broker, 3 on an existing cluster.")
    kafka_min_insync_replicas: int | None = Field(
        None, ge=1, description="Copies a write needs before it counts (acks=all); unset: 1 locally, 2 on a cluster.")
    request_signatures: Literal["auto", "required", "optional"] = Field(
        "auto", description="Whether the scheduler admits only signed requests and cancels (framebus.signing): required, "
                            "optional (an unsigned one passes, a wrongly signed one never does), or auto: required "
                            "when Kafka authenticates its clients (SASL_*), optional on a plaintext bus.")
    service_signing_key_previous: SecretStr | None = Field(
        None, description="The services' previous signing key, still accepted by the scheduler while the services move "
                          "to a new FRAMEBUS_SERVICE_SIGNING_KEY (rotation); unset once they have.")
    signature_max_age_s: float = Field(
        300.0, gt=0, le=86400, description="How far a signed record's time may be from the scheduler's clock before it "
                                           "is refused as a replay (either way: clocks drift).")

    # --- S3 --------------------------------------------------------------------------
    s3_endpoint: str | None = Field(
        None, description="Endpoint URL of an existing S3 service (e.g. https://us-east-1.linodeobjects.com); unset = start a local server.")
    s3_port: int = Field(7070, ge=1, le=65535, description="Port of the local S3 server.")
    s3_region: str = Field("us-east-1", description="S3 region used for signing.")
    s3_access_key: str = Field("framebus", description="S3 access key id.")
    s3_secret_key: SecretStr = Field(SecretStr("framebus-local-secret"), description="S3 secret key.")
    s3_bucket: str = Field("framebus-videos", min_length=3, max_length=63, description="Bucket for videos and manifests.")
    s3_presign_expiry_s: int = Field(3600, ge=1, le=604800, description="Lifetime of presigned GET URLs.")
    s3_addressing_style: Literal["path", "virtual"] = Field(
        "path", description="`path` (bucket in the path) or `virtual` (bucket in the host name; Linode and AWS support both).")
    s3_checksums: Literal["when_required", "when_supported"] = Field(
        "when_required", description="When boto3 adds CRC checksums; `when_required` suits S3-compatible services such as Linode's.")
    s3_upload_deadline_s: float = Field(300.0, gt=0, description="How long a worker retries an upload (the file waits in its spool) before `upload_failed`.")
    ledger_dedupe_window_s: float = Field(
        2 * 86400.0, gt=0, description="Seconds the ledger fold remembers which requests it settled (and which "
                                       "credits it folded), to count a late duplicate once; older ones are summed, "
                                       "not remembered. Longer than any request lives (queue TTL plus run time). "
                                       "A ledger snapshot holds the window's settled requests (~50 bytes each).")
    ledger_snapshot_interval_s: float = Field(
        300.0, gt=0, description="Seconds between metering's snapshots of the ledger fold "
                                 "(framebus.ledger.snapshots), from which every reader of the ledger starts.")

    result_cache_ttl_days: int = Field(
        30, gt=0, description="Days an entry of the result cache (`_results/` in the bucket) serves identical "
                              "requests; an older one is a miss and is deleted. At most the bucket's output "
                              "retention, or a hit finds its video gone (then it renders).")

    # --- Producers and the gateway ------------------------------------------------
    webhook_allowed_hosts: frozenset[str] = Field(
        frozenset(), description="Hosts the notifier may call even though they resolve to private or loopback addresses (JSON list).")
    webhook_retry_schedule_s: tuple[float, ...] = Field(
        RETRY_SCHEDULE_S,
        description="Delay before each retry of a failed webhook (JSON list); after the last, the dead-letter topic.")
    webhook_concurrency_per_endpoint: int = Field(4, ge=1, description="Deliveries in flight to one host at once.")
    webhook_timeout_s: float = Field(15.0, gt=0, le=60, description="How long one webhook attempt may take.")
    webhook_dedupe_window_s: float = Field(
        3600.0, gt=0, description="A request gets one webhook: a second terminal result within this long (a superseded attempt's) sends none.")
    gateway_host: str = Field(LOCAL_HOST, description="Address the HTTP gateway binds.")
    gateway_port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP gateway.")
    gateway_max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body the gateway reads (413 above).")
    gateway_submissions_per_minute: int = Field(600, ge=1, description="Default per-tenant submission rate (429 above).")
    gateway_public_url: str | None = Field(
        None, description="The gateway's address as clients reach it, for the stable video links in responses, "
                          "webhooks and manifests (<url>/v1/generations/<id>/video). Unset: "
                          "http://<gateway_host>:<gateway_port>.")

    batch_max_bytes: int = Field(256 * 2**20, ge=1024, description="Largest batch file `framebus batch submit` reads.")
    batch_link_expiry_s: int = Field(
        7 * 86400, ge=60, le=604800,
        description="Lifetime of the video links in a batch manifest, from when the manifest is written "
                    "(at most 7 days, S3's limit for a presigned URL).")

    # --- Scheduler -------------------------------------------------------------------
    scheduler_aging_s: float = Field(60.0, gt=0, description="Waiting this long is worth one tier of priority.")
    scheduler_worker_timeout_s: float = Field(10.0, gt=0,
                                              description="A worker silent this long is declared dead; its jobs move.")
    scheduler_unserved_grace_s: float = Field(
        120.0, gt=0, description="A queued request whose model no live worker serves fails with `model_unavailable` after this long.")
    scheduler_unreported_grace_s: float = Field(
        60.0, gt=0, description="Requests of a job its live worker no longer runs, still without a result after this long, fail with `worker_lost`.")
    scheduler_tier_ttl_s: dict[str, float] = Field(
        default_factory=dict, description="Per tier, seconds a request may stay queued before it fails with `expired` "
                                          "(JSON object, e.g. `{\"batch\": 172800}`); tiers left out keep 300 / 3600 / 86400.")
    scheduler_tier_max_queued: dict[str, int] = Field(
        default_factory=dict, description="Per tier, queued requests beyond which the tier refuses with `queue_full` "
                                          "(JSON object); tiers left out keep 1000 / 20000 / 200000.")

    # --- Generator workers -----------------------------------------------------------
    models_dir: Path | None = Field(None, description="Directory of real checkpoints, one sub-directory per model name (diffusers layout).")
    engine_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the engine runs; `auto`: CUDA when present.")
    engine_precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="`auto`: bf16 where the hardware has fast bf16.")
    engine_quantize: Literal["auto", "none", "int8", "float8"] = Field("auto", description="Transformer weights: `auto` picks float8 on GPUs that support it, int8 on CPUs.")
    engine_cache: Literal["none", "first-block", "taylorseer", "magcache"] = Field("first-block", description="Diffusers cache hook on the transformer.")
    engine_cache_threshold: float | None = Field(None, gt=0, description="Cache threshold; unset: the model's own default.")
    engine_prompt_cache: int = Field(1024, ge=0, description="Text-encoder outputs kept (LRU entries); 0 turns the prompt cache off.")
    engine_compile: bool = Field(False, description="torch.compile the transformer blocks: a slower warm-up for faster steps.")
    engine_threads: int | None = Field(None, ge=1, description="CPU threads for torch; unset: torch's default.")
    encoder: Literal["auto", "h264_nvenc", "libx264"] = Field("auto", description="`auto`: h264_nvenc when a trial encode succeeds, else libx264.")
    x264_preset: str = Field("veryfast", description="libx264 preset.")
    nvenc_preset: str = Field("p4", description="h264_nvenc preset (p1 fastest .. p7 best).")

    # --- Metering: price book and cost model (the figures are examples) -----------------
    currency: str = Field("USD", description="Currency of the price book and the cost model.")
    price_per_1k_tokens: float = Field(5.00, ge=0, description="List price of 1,000 tokens at the interactive tier.")
    tier_price_factors: dict[str, float] = Field(
        {"interactive": 1.0, "standard": 0.8, "batch": 0.5}, description="Price factor per tier (JSON object).")
    gpu_hour_costs: dict[str, float] = Field(
        {"rtx-pro-6000": 2.50, "h100": 3.00, "cpu": 0.10},
        description="What an hour of each machine kind costs us (JSON object); unknown kinds cost `default`.")
    worker_machine: str | None = Field(None, description="Machine kind a worker reports for the cost model; unset: detected (cpu, or the GPU's name).")

    # --- Logging and health -------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level of every service's log.")
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per log line.")
    health_port: int | None = Field(
        None, ge=1, le=65535, description="Port of a service's /healthz, /readyz and /metrics, on every interface; unset: a free port on 127.0.0.1 (`framebus ps` finds it).")
    client_stall_s: float = Field(
        30.0, gt=0, description="A service whose Kafka clients make no progress this long while the broker answers a "
                                "fresh connection is wedged: /healthz fails and it exits non-zero for its supervisor to restart it.")

    def watchdog(self) -> WatchdogConfig:
        return WatchdogConfig(stall_s=self.client_stall_s, probe_interval_s=min(5.0, self.client_stall_s / 3))

    # --- Local runtime ---------------------------------------------------------------
    cache_dir: Path = Field(default_factory=_default_cache_dir,
                            description="Downloads kept between runs: Kafka jars, the versitygw binary.")
    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="Data, logs and pid files of the local servers.")
    startup_timeout_s: float = Field(90.0, gt=0, description="How long `up` waits for each local server to answer.")

    _blank_endpoint_is_unset = field_validator("s3_endpoint", mode="before")(blank_is_unset)

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint is None

    @property  # not cached: model_copy(update=...) would carry a stale value over
    def s3_endpoint_url(self) -> str:
        return self.s3_endpoint or f"http://{LOCAL_HOST}:{self.s3_port}"

    @field_validator("scheduler_tier_ttl_s", "scheduler_tier_max_queued")
    @classmethod
    def _known_tiers(cls, value: dict, info) -> dict:
        unknown = sorted(set(value) - {tier.value for tier in Tier})
        if unknown:
            raise ValueError(f"`{info.field_name}` names tiers {', '.join(tier.value for tier in Tier)}, not {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _statuses_outlast_queued_requests(self) -> Settings:
        longest = max(self.scheduler_tier_ttl_s.items(), key=lambda item: item[1], default=None)
        if longest is not None and longest[1] > self.status_retention_days * 86400:
            raise ValueError(f"`status_retention_days` ({self.status_retention_days}) must outlast the longest a "
                             f"request may stay queued ({longest[0]}: {longest[1]:g} s in `scheduler_tier_ttl_s`)")
        if longest is not None and longest[1] >= self.ledger_dedupe_window_s:
            raise ValueError(f"`ledger_dedupe_window_s` ({self.ledger_dedupe_window_s:g}) must outlast the longest a "
                             f"request may stay queued ({longest[0]}: {longest[1]:g} s in `scheduler_tier_ttl_s`), "
                             "or its late settlement could count twice")
        return self

    def catalogue(self) -> tuple[topics.TopicSpec, ...]:
        """The topic catalogue with the retention these settings give (what `framebus up` creates and compares)."""
        return topics.catalogue({spec.retention_setting: getattr(self, spec.retention_setting)
                                 for spec in topics.CATALOGUE if spec.retention_setting})

    @property
    def accepted_service_keys(self) -> tuple[str, ...]:
        """The services' keys the scheduler accepts: the current one and, while rotating, the previous."""
        keys = (self.service_signing_key, self.service_signing_key_previous)
        return tuple(key.get_secret_value() for key in keys if key is not None)

    @property
    def signatures_required(self) -> bool:
        if self.request_signatures == "auto":
            return self.kafka_security_protocol.startswith("SASL")
        return self.request_signatures == "required"

    @property
    def replication(self) -> Replication:
        """What `framebus up` creates topics with: a single local broker cannot hold more than one copy;
        a cluster keeps three and needs two for a write (one broker may fail without losing a record)."""
        factor = self.kafka_replication_factor or (1 if self.embedded_kafka else 3)
        return Replication(factor, self.kafka_min_insync_replicas or min(factor, 1 if self.embedded_kafka else 2))

    def video_link(self, request_id: str) -> str:
        """The stable link to a request's video: the gateway answers it with a freshly presigned URL."""
        host = LOCAL_HOST if self.gateway_host in ("0.0.0.0", "::") else self.gateway_host
        base = (self.gateway_public_url or f"http://{host}:{self.gateway_port}").rstrip("/")
        return f"{base}/v1/generations/{quote(request_id, safe='')}/video"

    def request_context(self) -> dict:
        """The validation context for requests: the stack's default model and this deployment's
        webhook allowlists."""
        return {**super().request_context(), "webhook_allowed_hosts": self.webhook_allowed_hosts}

    def as_env(self) -> dict[str, str]:
        """These settings as FRAMEBUS_* variables, so a child process sees exactly them."""
        return {f"FRAMEBUS_{name.upper()}": env_value(value)
                for name, value in self.model_dump().items() if value is not None}


def env_value(value: object) -> str:
    """A setting's value written the way its FRAMEBUS_* variable is read: JSON for lists and objects."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, (set, frozenset)):
        return json.dumps(sorted(value))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_markdown() -> str:
    """The settings as a Markdown table (embedded in the README; a test keeps it current).
    Defaults are shown as the environment variable would spell them."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default
        if isinstance(default, Path):
            default = str(default).replace(str(Path.home()), "~")
        shown = "unset" if default is None else "empty" if default == "" else f"`{env_value(default)}`"
        rows.append(f"| `FRAMEBUS_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
