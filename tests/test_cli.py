import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import build_parser


def _breakout(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


@pytest.mark.parametrize(
    "command", [[], ["worker"], ["api"], ["up"], ["publish"], ["demo"], ["dlq"], ["dlq", "replay"]]
)
def test_help(command: list[str]) -> None:
    result = _breakout(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: breakout")


BENCHES = sorted(p.name for p in (Path(__file__).parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("bench", BENCHES)
def test_bench_help(bench: str) -> None:
    """Each bench explains its options before it starts a broker (a bad help string
    once made ``--help`` a traceback)."""
    script = Path(__file__).parents[1] / "bench" / bench
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_invalid_setting_stops_with_one_line() -> None:
    result = _breakout("api", BREAKOUT_API_PORT="abc")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "BREAKOUT_API_PORT=abc" in lines[0]


@pytest.mark.parametrize("rate", ["0", "-3", "fast", "nan", "inf"])
def test_bad_cli_argument_is_a_usage_error(rate: str) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["up", "--rate", rate])
    assert caught.value.code == 2


def test_publish_missing_file_is_one_clear_line(tmp_path: object) -> None:
    result = _breakout("publish", "/nonexistent/cdrs.jsonl")
    assert result.returncode == 2
    assert result.stderr.strip() == "breakout publish: no such file: /nonexistent/cdrs.jsonl"


def test_worker_with_bad_alert_rules_stops_with_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[defaults]\ndrop_points = -5\n")
    result = _breakout("worker", BREAKOUT_ALERT_RULES=str(rules))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"breakout worker: {rules}: defaults.drop_points: "
        "expected ASR percentage points, more than 0 and at most 100, got -5"
    )
    result = _breakout("worker", BREAKOUT_MINUTE_RETENTION="3600")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("breakout worker: BREAKOUT_MINUTE_RETENTION=3600: shorter than")


def test_dlq_offsets_without_a_partition_is_one_clear_line() -> None:
    result = _breakout("dlq", "replay", "--from-offset", "3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "breakout dlq: --from-offset and --to-offset need --partition (of the dead-letter topic)"
    )


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--last", "-1"], ["--partition", "x"]])
def test_bad_dlq_arguments_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["dlq", *args])
    assert caught.value.code == 2
