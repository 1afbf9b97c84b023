"""The ``breakout`` command: one way to start each process.

Each subcommand reads the settings first, so an invalid ``BREAKOUT_*`` variable
stops it with one line naming the variable and exit status 2, before any I/O.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from breakout import __version__
from breakout.auth import Role, key_entry, new_key, parse_role
from breakout.dlq import Selection, parse_instant
from breakout.errors import BreakoutError
from breakout.settings import Settings, load_settings


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    run_worker(settings)
    return 0


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from api.app import run_api

    run_api(settings, workers=args.workers)
    return 0


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from cli.up import run_up

    return run_up(settings, demo=args.demo, rate=args.rate)


def _cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from streams.publish import run_publish

    topic = args.topic or settings.topic
    check = not args.no_check
    if args.file == "-":
        return run_publish(settings, sys.stdin.buffer, topic, check)
    path = Path(args.file)
    if not path.is_file():
        raise BreakoutError(f"no such file: {path}")
    with path.open("rb") as source:
        return run_publish(settings, source, topic, check)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def _instant(text: str) -> int:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _selection(args: argparse.Namespace) -> Selection:
    if (args.from_offset is not None or args.to_offset is not None) and args.partition is None:
        raise BreakoutError("--from-offset and --to-offset need --partition (of the dead-letter topic)")
    return Selection(
        frozenset(args.reason or ()), args.since, args.until, args.partition, args.from_offset, args.to_offset
    )


def _cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from streams.dlq import run_replay, run_show

    selection = _selection(args)
    if args.dlq_command == "replay":
        return run_replay(settings, selection, args.topic or settings.topic, args.dry_run)
    run_show(settings, selection, None if args.all else args.last, args.json, args.follow)
    return 0


def _role(text: str) -> Role:
    try:
        return parse_role(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_api_key(settings: Settings, args: argparse.Namespace) -> int:
    key = new_key()
    entry = key_entry(key, args.role)
    print(f"key:   {key}")
    print(f"role:  {args.role}")
    print(f"entry: {entry}")
    print(
        "Give the key to its user; it is not stored anywhere. Add the entry to BREAKOUT_API_KEYS "
        "(comma-separated) and restart the API.",
        file=sys.stderr,
    )
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.publish import run_demo

    run_demo(settings, rate=args.rate, batch=args.batch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breakout",
        description="Near-real-time, billing-accurate CDR breakouts: Kafka -> Faust -> Redis -> read API. "
        "Configured through BREAKOUT_* environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"breakout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the Faust worker (CDR topic -> tables -> Redis)")
    worker.set_defaults(run=_cmd_worker)

    api = commands.add_parser("api", help="run the read API on BREAKOUT_API_HOST:BREAKOUT_API_PORT")
    api.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="processes serving the port, each with its own caches (default 1; about one per core)",
    )
    api.set_defaults(run=_cmd_api)

    up = commands.add_parser(
        "up", help="run everything on this machine: embedded broker, Redis, worker and API"
    )
    up.add_argument("--demo", action="store_true", help="also feed synthetic CDRs")
    up.add_argument("--rate", type=_positive_float, default=200.0, help="demo CDRs per second (default 200)")
    up.set_defaults(run=_cmd_up)

    publish = commands.add_parser(
        "publish", help="send CDRs from a JSON-lines file (or - for stdin) to the topic"
    )
    publish.add_argument("file", help="JSON-lines file: one CDR object or one array of CDRs per line")
    publish.add_argument("--topic", help="topic to send to (default BREAKOUT_TOPIC)")
    publish.add_argument(
        "--no-check",
        action="store_true",
        help="send every line as it is (the worker dead-letters what the contract refuses)",
    )
    publish.set_defaults(run=_cmd_publish)

    dlq = commands.add_parser(
        "dlq", help="read the dead-letter topic: counts by reason, the newest dead letters, --follow"
    )
    dlq.add_argument("--last", type=_count, default=10, help="show the newest N (default 10; 0: counts only)")
    dlq.add_argument("--all", action="store_true", help="show every dead letter selected")
    dlq.add_argument("--json", action="store_true", help="one JSON object per dead letter, for scripts")
    dlq.add_argument("--follow", action="store_true", help="then show new dead letters as they arrive")
    replay = dlq.add_subparsers(dest="dlq_command", metavar="replay").add_parser(
        "replay",
        help="send the selected dead letters back to the CDR topic (once their cause is fixed)",
        description="Send the payload of each selected dead letter, as it was published, back to "
        "the CDR topic. The worker counts it like any CDR: once, however often it is replayed.",
    )
    replay.add_argument("--topic", help="topic to send to (default BREAKOUT_TOPIC)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    for parser_ in (dlq, replay):
        parser_.add_argument("--reason", action="append", help="only this reason (repeatable)")
        parser_.add_argument("--since", type=_instant, help="only dead-lettered at or after (ISO 8601, UTC)")
        parser_.add_argument("--until", type=_instant, help="only dead-lettered before (ISO 8601, UTC)")
        parser_.add_argument("--partition", type=_count, help="only this partition of the dead-letter topic")
        parser_.add_argument("--from-offset", type=_count, help="only from this offset (with --partition)")
        parser_.add_argument(
            "--to-offset", type=_count, help="only to this offset, inclusive (with --partition)"
        )
    dlq.set_defaults(run=_cmd_dlq)

    api_key = commands.add_parser(
        "api-key", help="create an API key: prints the key once and its BREAKOUT_API_KEYS entry"
    )
    api_key.add_argument(
        "--role", type=_role, required=True, help="`admin` or `customer:<id>` (what the key may read)"
    )
    api_key.set_defaults(run=_cmd_api_key)

    demo = commands.add_parser("demo", help="publish synthetic CDRs to the topic until stopped")
    demo.add_argument("--rate", type=_positive_float, default=200.0, help="CDRs per second (default 200)")
    demo.add_argument("--batch", type=_positive_int, default=1, help="CDRs per message (default 1)")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        status: int = args.run(settings, args)
        return status
    except BreakoutError as exc:
        print(f"breakout {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
