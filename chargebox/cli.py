"""The `chargebox` command (and `python run.py`): serve, init-db, create-seller, audit.

Owns process start-up: it builds the one Config from argv and the environment,
opens the database, creates the schema under a file lock, finds or makes the
admin token, and hands over to `server`. Tokens are written to a file, never
to a log; only a new seller's key is printed, once, because that is the point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from chargebox import auth, db
from chargebox.config import SYNCHRONOUS_LEVELS, Config, env_defaults
from chargebox.errors import ChargeboxError
from chargebox.models import ALL_MODELS
from chargebox.services import Chargebox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargebox", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--db", type=Path, help="SQLite file (env CHARGEBOX_DB; default data/chargebox.db)"
        )
        return sub

    serve = command("serve", "run the HTTP service until SIGTERM or Ctrl-C")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--processes",
        type=int,
        help="server processes sharing the port, to use more cores (env CHARGEBOX_PROCESSES; "
        "default 1)",
    )
    serve.add_argument(
        "--threads", type=int, help="waitress worker threads (env CHARGEBOX_THREADS; default 64)"
    )
    serve.add_argument(
        "--synchronous",
        choices=SYNCHRONOUS_LEVELS,
        help="SQLite durability (env CHARGEBOX_SYNCHRONOUS; default NORMAL, survives kill -9)",
    )
    command("init-db", "create the database schema and the admin token, then exit")
    create = command("create-seller", "create a seller and print its API key (shown once)")
    create.add_argument("name")
    audit = command("audit", "re-check invariants I1-I5 straight from the database file")
    audit.add_argument("--json", action="store_true", help="print the full report as JSON")
    return parser


def build_config(args: argparse.Namespace) -> Config:
    values = env_defaults()
    for name, field in (
        ("db", "db_path"),
        ("host", "host"),
        ("port", "port"),
        ("threads", "threads"),
        ("processes", "processes"),
        ("synchronous", "synchronous"),
    ):
        if getattr(args, name, None) is not None:
            values[field] = getattr(args, name)
    return Config(**values)


def prepare(config: Config) -> Config:
    """Open the database, create the schema if needed, and settle the admin token and ledger key."""
    db.open_database(config)
    db.ensure_schema(config, ALL_MODELS)
    token = config.admin_token or _stored_secret(
        config.admin_token_path, "an admin token", "CHARGEBOX_ADMIN_TOKEN"
    )
    key = config.ledger_key or _stored_secret(
        config.ledger_key_path, "a ledger key", "CHARGEBOX_LEDGER_KEY"
    )
    db.use_ledger_key(key)
    return config.with_secrets(token, key)


def _stored_secret(path: Path, what: str, variable: str) -> str:
    """Read a generated secret, or create it (owner-only, atomically) on first start."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(auth.new_admin_token() + "\n")
        with contextlib.suppress(FileExistsError):  # another process won: use its secret
            os.link(temporary, path)
        temporary.unlink()
        print(
            f"chargebox: generated {what} in {path} (readable by its owner only); "
            f"set {variable} to choose your own",
            file=sys.stderr,
        )
    return path.read_text().strip()


def _serve(config: Config) -> int:
    from chargebox.server import serve  # waitress is needed only here

    config = prepare(config)
    if not os.environ.get("CHARGEBOX_ADMIN_TOKEN"):
        print(f"chargebox: admin token is in {config.admin_token_path}", file=sys.stderr)
    return serve(config, announce=lambda line: print(line, flush=True))


def _create_seller(config: Config, name: str) -> int:
    prepare(config)
    seller, api_key = Chargebox(config).create_seller(name)
    print(json.dumps({**seller, "api_key": api_key}, ensure_ascii=False))
    print("Store this API key now: it is shown only once.", file=sys.stderr)
    return 0


def _audit(config: Config, as_json: bool) -> int:
    if not config.db_path.exists():
        print(f"chargebox audit: no database at {config.db_path}", file=sys.stderr)
        return 2
    db.open_database(config)
    path = config.ledger_key_path
    db.use_ledger_key(config.ledger_key or (path.read_text().strip() if path.exists() else None))
    report = Chargebox(config).audit()
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    totals = report["totals"]
    summary = (
        f"{totals['sellers']} sellers, {totals['ledger_entries']} ledger entries, "
        f"{totals['sales']} sales, {totals['balance_sum']:,} toman held"
    )
    if report["consistent"]:
        print(f"audit: books reconcile ({summary})", file=sys.stderr)
        return 0
    print(f"audit: {report['problem_count']} problem(s) ({summary})", file=sys.stderr)
    for problem in report["problems"]:
        print(
            f"  {problem['invariant']}: seller {problem['seller_id']}, "
            f"entry {problem['entry_id']}: {problem['message']}",
            file=sys.stderr,
        )
    return 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # one line per queued request
    args = _parser().parse_args(argv)
    try:
        config = build_config(args)
        if args.command == "serve":
            return _serve(config)
        if args.command == "init-db":
            prepare(config)
            print(f"chargebox: schema ready in {config.db_path}", file=sys.stderr)
            return 0
        if args.command == "create-seller":
            return _create_seller(config, args.name)
        return _audit(config, args.json)
    except (ValueError, ChargeboxError) as exc:
        message = exc.message if isinstance(exc, ChargeboxError) else str(exc)
        print(f"chargebox: {message}", file=sys.stderr)
        return 2
    finally:
        db.close_database()


if __name__ == "__main__":
    sys.exit(main())
