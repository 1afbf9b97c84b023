from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from breakout.errors import ConfigError
from breakout.redis_client import connect, is_cluster
from breakout.settings import load_settings


def test_defaults_are_documented_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA", "REDIS", "TOPIC", "APP_ID", "API_HOST", "API_PORT", "DATA_DIR"):
        monkeypatch.delenv(f"BREAKOUT_{name}", raising=False)
    settings = load_settings()
    assert settings.kafka == "localhost:9092"
    assert settings.redis == "redis://localhost:6379/0"
    assert settings.topic == "cdrs"
    assert settings.dlq_topic == "cdrs.dlq"
    assert settings.app_id == "breakout"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("var")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAKOUT_KAFKA", "k1:9093,k2:9093")
    monkeypatch.setenv("BREAKOUT_API_PORT", "9000")
    settings = load_settings()
    assert settings.kafka == "k1:9093,k2:9093"
    assert settings.kafka_host_port == ("k1", 9093)
    assert settings.api_port == 9000


@pytest.mark.parametrize(
    ("url", "cluster"),
    [("redis://r:6379/0", False), ("redis+cluster://r1:7000", True), ("rediss+cluster://r1:7000", True)],
)
def test_redis_names_a_single_server_or_a_cluster(
    monkeypatch: pytest.MonkeyPatch, url: str, cluster: bool
) -> None:
    monkeypatch.setenv("BREAKOUT_REDIS", url)
    settings = load_settings()
    assert settings.redis == url
    assert is_cluster(settings.redis) is cluster
    assert isinstance(connect(settings.redis), RedisCluster) is cluster  # no connection made yet


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BREAKOUT_API_PORT", "abc"),
        ("BREAKOUT_API_PORT", "70000"),
        ("BREAKOUT_KAFKA", "no-port"),
        ("BREAKOUT_REDIS", "http://x"),
        ("BREAKOUT_REDIS", "redis+cluster://"),
        ("BREAKOUT_APP_ID", "has space"),
        ("BREAKOUT_STORE", "s3://"),
        ("BREAKOUT_CURRENCY", "usd"),
        ("BREAKOUT_MINUTE_RETENTION", "0"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable}={value}: ")
    assert "\n" not in message
