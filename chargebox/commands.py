"""The CLI's admin commands: a seller's keys, its suspension, refunds, the admin token; the verdict.

`chargebox keys | create-key | revoke-key | rotate-key | suspend | reactivate | refund |
rotate-admin-token | statement`: the same use cases as the admin's API and pages, run
once on the database `--db` names, their answer printed as JSON (a statement: or CSV)
on stdout. A new secret is printed once, on stdout only; nothing here logs one.
`audit_verdict` says what `chargebox audit` found, counts in the right number (1 sale).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from chargebox import anchors, auth, periods, revocations
from chargebox.anchors import located
from chargebox.config import Config, checked_admin_token, whole_number
from chargebox.location import (
    check_database_path,
    damage_found,
    without_leftovers,
    written_secret,
)
from chargebox.services import Chargebox

COMMANDS = ("keys", "create-key", "revoke-key", "rotate-key", "suspend", "reactivate",
            "refund", "rotate-admin-token", "statement")  # fmt: skip
READS = ("keys", "statement")  # opened as they lie, nothing made beside them
SHOWN_ONCE = "Store this API key now: it is shown only once."
MAX_ID = 2**63 - 1  # a row id fits a signed 64-bit integer on both backends


row_id = whole_number(MAX_ID)  # an id argument


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The subcommands, each made by cli's `command(name, help)` (which adds --db)."""
    listed = command("keys", "list a seller's API keys (never a secret)")
    listed.add_argument("seller_id", type=row_id)
    create = command("create-key", "make a new labelled API key for a seller (shown once)")
    create.add_argument("seller_id", type=row_id)
    create.add_argument("label")
    for name, what in (
        ("revoke-key", "revoke a seller's key at once, on every server"),
        ("rotate-key", "revoke a key and make a new one with its label"),
    ):
        sub = command(name, what)  # fmt: skip
        sub.add_argument("seller_id", type=row_id)
        sub.add_argument("key_id", type=row_id)
    command("suspend", "suspend a seller: its keys and sessions are refused, no money moves"
            ).add_argument("seller_id", type=row_id)  # fmt: skip
    command("reactivate", "let a suspended seller's keys work again").add_argument(
        "seller_id", type=row_id
    )
    refund = command(
        "refund",
        "give a sale's whole amount back to its seller, once, as POST /api/sales/{id}/refund "
        "does (prints the refund's ledger entry)",
    )
    refund.add_argument("sale_id", type=row_id)
    refund.add_argument("--reason", required=True, help="why, as the seller will read it")
    refund.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="run it again with the same key: refunded once, the same answer",
    )
    statement = command("statement", "a seller's statement of a period (JSON, or CSV with --csv),"
                        " as GET /api/statements gives it")  # fmt: skip
    statement.add_argument("--seller", type=row_id, required=True, dest="seller_id", help="its id")
    for name in periods.NAMES:
        statement.add_argument(f"--{name}", dest=f"period_{name}", metavar=name.upper(),
                               help=_PERIODS[name])  # fmt: skip
    statement.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    command(
        "rotate-admin-token",
        "make a new admin token (written to the data dir, printed once) the only one in force "
        "on every server at once; with CHARGEBOX_ADMIN_TOKEN set, make that one the token in force",
    )


_PERIODS = {  # periods.NAMES, as docs/api.md says them; one period: --from and --to, or one
    "from": "with --to: [FROM, TO), ISO 8601 times with their offsets, or dates (Tehran midnight)",
    "to": "with --from: the period's end, not in it",
    "day": "a Tehran day, 2026-12-01",
    "month": "a month in Tehran, 2026-12",
    "jmonth": "a Jalali month in Tehran, 1405-09",
    "jday": "a Jalali day in Tehran, 1405-09-10",
}


def run(args: argparse.Namespace, config: Config, prepare: Callable[[Config], Config]) -> int:
    from_environment = config.admin_token is not None  # CHARGEBOX_ADMIN_TOKEN is set
    reads = args.command in READS
    service = opened_as_it_lies(config) if reads else Chargebox(prepare(config))
    try:
        if reads:
            _said_if_damaged(config)
            _said_if_behind(service, config)
        if args.command == "rotate-admin-token":
            return _rotate_admin_token(service, config, from_environment)
        if args.command == "statement":
            return _statement(args, service)
        return _answer(args, service)
    finally:
        service.close()


def opened_as_it_lies(config: Config) -> Chargebox:
    """The service on a file read where it lies (`audit`, `keys`, `statement`): a backup's
    copy in a read-only directory too, nothing made beside it (no ledger key, no schema
    step: cli.prepare's); its schema checked (an older file: said, not "no such column")."""
    if not config.db_url:
        check_database_path(config.db_path, writing=False)
    service = Chargebox(dataclasses.replace(config, ledger_key=config.ledger_key_at_hand()))
    try:
        service.database.check_schema()
    except BaseException:
        service.close()
        raise
    return service


def _said_if_damaged(config: Config) -> None:
    """A read of a file a server marked damaged is answered, with a warning."""
    if not config.db_url and (said := damage_found(config.db_path)) is not None:
        print(f"chargebox: warning: --db {config.db_path}: a server found it damaged "
              f"({said}): what is read from it may be wrong", file=sys.stderr)  # fmt: skip


def _said_if_behind(service: Chargebox, config: Config) -> None:
    """A read of a file older than its anchors (a restore not yet accepted: start-up and
    the commands that write refuse it) is answered, with a warning: its keys may list
    revoked ones as live, its statement lack later sales (helper-130)."""
    database = service.database
    found = anchors.loaded(config, database.ledger_key)  # before the snapshot (anchors.py)
    with database.snapshot() as db:
        behind = anchors.rollbacks(db, found.heads) + revocations.problems(db, found)
    if behind:
        first = behind[0]
        where = "(the PostgreSQL database)" if config.db_url else config.db_path
        print(f"chargebox: warning: --db {where} is older than its anchors in "
              f"{config.anchors_path} ({len(behind)} problem(s), first: {located(first)}"
              f"{first['message']}): what it says may be out of date; `chargebox anchors "
              "check` lists them", file=sys.stderr)  # fmt: skip


def _answer(args: argparse.Namespace, service: Chargebox) -> int:
    seller = getattr(args, "seller_id", None)
    secret = None
    if args.command == "refund":
        answer: object = service.refund(args.sale_id, args.reason, args.idempotency_key).record
    elif args.command == "keys":
        answer = service.queries.seller_keys(seller)
    elif args.command == "create-key":
        answer, secret = service.create_key(seller, args.label)
    elif args.command == "revoke-key":
        answer = service.revoke_key(seller, args.key_id)
    elif args.command == "rotate-key":
        answer, secret = service.rotate_key(seller, args.key_id)
    else:
        answer = service.set_status(seller, "suspended" if args.command == "suspend" else "active")
    if secret is not None:
        answer = {**answer, "api_key": secret}
    for item in answer if isinstance(answer, list) else [answer]:
        print(json.dumps(item, ensure_ascii=False))
    if secret is not None:
        print(SHOWN_ONCE, file=sys.stderr)
    return 0


def _statement(args: argparse.Namespace, service: Chargebox) -> int:
    """The statement streamed to stdout as it is read (a year's does not fill memory)."""
    when = {name: getattr(args, f"period_{name}") for name in periods.NAMES}
    rendered = service.statement(
        args.seller_id,
        {k: v for k, v in when.items() if v is not None},
        "csv" if args.csv else "json",
    )
    out = sys.stdout.buffer
    for piece in rendered:
        out.write(piece)
    if not args.csv:
        out.write(b"\n")
    out.flush()
    return 0


def _rotate_admin_token(service: Chargebox, config: Config, from_environment: bool) -> int:
    """The token in force changes in the database (every server checks it per request);
    the file is replaced atomically, owner-only. A token from the environment is made the
    one in force as it is: the operator chose it, and no file holds it."""
    if from_environment:
        auth.rotate_admin(service.database, config.admin_token)
        print("chargebox: the token in CHARGEBOX_ADMIN_TOKEN is now the admin token on every "
              "server; give it to every server's environment before it restarts",
              file=sys.stderr)  # fmt: skip
        return 0
    token = auth.new_admin_token()
    auth.rotate_admin(service.database, token)
    print(token)
    try:
        auth.replace_secret(config.admin_token_path, token)
    except OSError as exc:
        where = config.admin_token_path
        print(f"chargebox: the new admin token is in force, but {where} could not be "
              f"written ({exc.strerror}): put it there yourself", file=sys.stderr)  # fmt: skip
        return 1
    print(f"chargebox: the admin token above is now the only one in force on every server, "
          f"and in {config.admin_token_path}; copy that file to every host's data dir",
          file=sys.stderr)  # fmt: skip
    return 0


def admin_token(config: Config, make: bool = True) -> str | None:
    """The admin token: CHARGEBOX_ADMIN_TOKEN's, or its file's (made on first start if
    `make`, else None), refused (ValueError) if too short. Start-up checks an existing
    file before it writes anything, and makes a new one only once nothing refused."""
    path = config.admin_token_path
    if config.admin_token or (not make and not path.exists()):
        return config.admin_token
    return checked_admin_token(
        stored_secret(path, "an admin token", "CHARGEBOX_ADMIN_TOKEN"), str(path)
    )


def stored_secret(
    path: Path, what: str, variable: str, new: Callable[[], str] = auth.new_admin_token
) -> str:
    """Read a generated secret, or create it (owner-only, atomically, on disk before it is
    used: a power cut never leaves a sealed ledger with no key) on first start; a write
    that fails leaves nothing, and of processes starting together one makes it. A file
    that cannot be read is refused in one line. A killed writer's temporary file is
    removed (location.without_leftovers; by written_secret when it writes)."""
    if not path.exists():
        try:
            written_secret(path, new(), replacing=False)
            print(f"chargebox: generated {what} in {path} (readable by its owner only); "
                  f"set {variable} to choose your own", file=sys.stderr)  # fmt: skip
        except FileExistsError:  # another process made it first: its secret is the one
            pass
    else:
        without_leftovers(path)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{path}: cannot read {what} from it ({why}): put it there as text "
                         f"this user may read, or set {variable}") from None  # fmt: skip
    if not secret:  # else "not the key that sealed this ledger", of a file that holds none
        raise ValueError(f"{path}: holds no {what.removeprefix('a ').removeprefix('an ')} "
                         f"(it is empty): put it there, or set {variable}")  # fmt: skip
    return secret


def check_admin_token(database, config: Config, token: str) -> bool:
    """At start-up: whether the configured admin token is the one in force; if not (it
    was rotated since), say so: the server starts, and only the token in force acts as admin."""
    current = auth.current_admin(database)
    if current is not None and current != auth.hash_key(token):
        source = "CHARGEBOX_ADMIN_TOKEN" if config.admin_token else str(config.admin_token_path)
        print(f"chargebox: warning: the admin token in {source} is not the one in force "
              "(it was rotated with `chargebox rotate-admin-token`): only the current one acts "
              "as the admin; put it there, or (a restored copy) run `chargebox "
              "rotate-admin-token` for a new one", file=sys.stderr)  # fmt: skip
        return False
    return True


def _count(number: int, one: str, more: str) -> str:
    return f"{number:,} {one if number == 1 else more}"  # 1 sale, 2 sales, 2,000 sales


def audit_verdict(report: dict) -> int:
    """The audit's verdict on stderr: 0 when the books reconcile, 1 with each problem."""
    totals = report["totals"]
    summary = (
        f"{_count(totals['sellers'], 'seller', 'sellers')}, "
        f"{_count(totals['ledger_entries'], 'ledger entry', 'ledger entries')}, "
        f"{_count(totals['sales'], 'sale', 'sales')}, {totals['balance_sum']:,} toman held"
    )
    if report["consistent"]:
        print(f"audit: books reconcile ({summary})", file=sys.stderr)
        return 0
    print(f"audit: {_count(report['problem_count'], 'problem', 'problems')} ({summary})",
          file=sys.stderr)  # fmt: skip
    for problem in report["problems"]:
        print(f"  {problem['invariant']}: {located(problem)}{problem['message']}", file=sys.stderr)
    return 1
