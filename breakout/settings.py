"""The one home of Breakout's configuration: typed settings from ``BREAKOUT_*`` variables.

Every process (worker, API, ``up``, ``publish``) builds one ``Settings`` at start-up
through ``load_settings()``, which turns pydantic's validation report into a single
line naming the variable, so a typo never surfaces as a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from breakout.auth import Role, parse_key_entries
from breakout.buckets import Retention
from breakout.errors import ConfigError

ENV_PREFIX = "BREAKOUT_"

Seconds = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Breakout's settings. The field docs are the configuration table of the README."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    kafka: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    redis: str = Field(
        "redis://localhost:6379/0",
        description="Redis the tables are mirrored to: `redis://host:port/db`, or a Redis Cluster "
        "as `redis+cluster://host:port` (any node; `rediss…` for TLS).",
    )
    topic: str = Field(
        "cdrs", description="Topic the CDR events are read from; `<topic>.dlq` gets the rejects."
    )
    app_id: str = Field(
        "breakout",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Faust app id: the consumer group, the prefix of internal topics and of Redis keys.",
    )
    data_dir: Path = Field(Path("var"), description="Where the worker keeps its RocksDB tables.")
    api_host: str = Field("127.0.0.1", description="Address the read API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the read API listens on.")
    worker_metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port of a worker's own Prometheus `/metrics` (its CDR counters), on "
        "BREAKOUT_API_HOST; 0: not served. A port in use is logged and skipped.",
    )
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of the topics Breakout creates.")
    replication: int = Field(1, ge=1, le=16, description="Replication factor of the topics Breakout creates.")
    rebalance_timeout: Seconds = Field(
        60, description="Seconds a consumer group waits for members to rejoin."
    )
    session_timeout: int = Field(
        10,
        ge=6,  # Apache Kafka's group.min.session.timeout.ms
        le=1800,  # and its group.max.session.timeout.ms
        description="Seconds without a heartbeat before a worker's partitions go to the others "
        "(Kafka's session.timeout.ms); the embedded broker also makes a first join wait half of it.",
    )
    ingest_process: bool = Field(
        True,
        description="Run the worker's ingest step (reading and validating CDRs) in a process of its "
        "own, so that it and the aggregating agent each have a core; `false` keeps it on the agent's "
        "event loop (a one-core machine).",
    )
    ingest_linger_ms: int = Field(
        1_000,
        ge=10,
        le=5_000,
        description="Milliseconds the broker may hold the ingest step's fetch for more CDRs to batch "
        "with the first: the delay live traffic pays for being processed in batches, and what a "
        "trickle's CPU per CDR saves by it (500: about a fifth more CPU at 1,000 CDR/s, half a "
        "second fresher).",
    )
    store: str = Field(
        "rocksdb://",
        pattern=r"^(rocksdb|memory)://$",
        description="Faust table store: `rocksdb://` or `memory://`.",
    )
    dial_codes: Path | None = Field(
        None, description="CSV `prefix,destination` overriding the shipped dial-code table."
    )
    currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="Currency of CDRs that name none (ISO 4217)."
    )
    minute_retention: Seconds = Field(48 * 3600, description="Seconds minute buckets are kept (stream time).")
    hour_retention: Seconds = Field(35 * 86400, description="Seconds hour buckets are kept (stream time).")
    day_retention: Seconds = Field(400 * 86400, description="Seconds day buckets are kept (stream time).")
    dedup_window: Seconds = Field(
        7 * 86400,
        description="Seconds (stream time) a counted CDR version is remembered: re-deliveries are "
        "dropped and revisions matched within it. Keep it longer than the platform's rating delay.",
    )
    short_call_seconds: int = Field(
        6,
        ge=1,
        le=3600,
        description="Connected calls shorter than this many seconds count as short calls (the "
        "false-answer and fraud signal). Applies to CDRs counted from then on.",
    )
    table_flush_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="Seconds a partition's counted CDRs may wait before the worker writes them to "
        "its tables and commits them (sooner at 8 MB): what a killed worker reads again on restart, "
        "against one changelog write of each changed customer-bucket per period.",
    )
    id_cache_mb: int = Field(
        32,
        ge=8,
        le=65_536,
        description="MB of memory the worker's on-disk id store may cache (RocksDB block cache), "
        "whatever the number of ids.",
    )
    api_keys: str = Field(
        "",
        description="API keys the read API accepts: comma-separated `<sha256 hex>:<role>` entries "
        "printed by `breakout api-key`; a role is `admin` or `customer:<id>`.",
    )
    api_cache_rows: int = Field(
        2_000_000,
        ge=0,
        description="Rows the read API keeps cached from unchanged buckets (0 = no cache).",
    )
    api_in_flight: int = Field(
        16,
        ge=1,
        le=64,
        description="Requests an API process works on at once; the others wait their turn, "
        "holding no Redis connection.",
    )
    api_waiting: int = Field(
        500,
        ge=0,
        description="Requests an API process lets wait for a turn; past that it answers 503 with "
        "`Retry-After` at once, rather than after a long wait.",
    )
    alert_rules: Path | None = Field(
        None,
        description="TOML file of the NOC alert rules: ASR and NER drops, PDD rises (docs/noc-alerts.md); "
        "unset: the built-in defaults.",
    )
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$", description="Log level.")

    @field_validator("kafka")
    @classmethod
    def _bootstrap_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port…], got {value!r}")
        return value

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme in ("redis+cluster", "rediss+cluster"):
            if not parts.netloc:
                raise ValueError(f"expected redis+cluster://host:port (any node), got {value!r}")
        elif parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError(f"expected redis://host:port/db or redis+cluster://host:port, got {value!r}")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: str) -> str:
        parse_key_entries(value)
        return value

    @property
    def api_roles(self) -> dict[str, Role]:
        """Key digest → role, from ``api_keys``."""
        return parse_key_entries(self.api_keys)

    @property
    def retention(self) -> Retention:
        """How long each bucket size is kept, in stream time."""
        return Retention(self.minute_retention, self.hour_retention, self.day_retention)

    @property
    def dlq_topic(self) -> str:
        """Dead-letter topic: the CDR topic's name plus ``.dlq``."""
        return f"{self.topic}.dlq"

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        """The first bootstrap server, for processes that start a local broker on it."""
        host, _, port = self.kafka.split(",")[0].strip().rpartition(":")
        return host, int(port)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, or raise ``ConfigError`` naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = ENV_PREFIX + field.upper()
        given = os.environ.get(variable, error.get("input"))
        raise ConfigError(f"{variable}={given!s}: {error['msg']}") from None
