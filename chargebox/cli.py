"""The `chargebox` command (and `python run.py`): serve, init-db, migrate, audit, backup...

Owns process start-up: it builds the one Config from argv and the environment,
checks where the database lives, opens it, settles the ledger key against the
seals already made, creates the schema under a file lock, finds or makes the
admin token, and hands over to `server`. A mistake is one line and exit 2.
Tokens are written to a file, never to a log; only a new seller's key is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path

import peewee
from filelock import FileLock

from chargebox import (
    __version__,
    anchors,
    auth,
    cpus,
    grants,
    guards,
    migrations,
    operations,
    pg_driver,
    postgresql,
    revocations,
    schema,
    seals,
)
from chargebox import commands as admin_commands
from chargebox import config as settings
from chargebox.config import MIN_SECRET_LENGTH, SYNCHRONOUS_LEVELS, Config, digits, from_arguments
from chargebox.db import DAMAGED_CODES, Database, open_database
from chargebox.errors import ChargeboxError, Damaged, Unavailable, primary_code
from chargebox.location import check_database_path, in_words, refuse_a_new_file
from chargebox.models import ALL_MODELS
from chargebox.services import Chargebox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargebox", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"chargebox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--db",
            help="SQLite file, or postgresql://user@host:port/dbname, its password in "
            "~/.pgpass (env CHARGEBOX_DB; default data/chargebox.db)",
        )
        sub.add_argument(
            "--data-dir",
            type=Path,
            help="with a PostgreSQL --db: where the admin token and ledger key files live "
            "(env CHARGEBOX_DATA_DIR; default data/)",
        )
        return sub

    serve = command("serve", "run the HTTP service until SIGTERM, Ctrl-C or SIGHUP")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=digits, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--processes",
        type=digits,
        help="server processes sharing the port, to use more cores (env CHARGEBOX_PROCESSES; "
        "default 1)",
    )
    serve.add_argument(
        "--threads", type=digits, help="waitress worker threads (env CHARGEBOX_THREADS; default 64)"
    )
    serve.add_argument(
        "--cpus",
        metavar="off|auto|LIST",
        help="pin each server process's threads to one CPU, its writer (SQLite) to a spare "
        "one if there is one: auto (the CPUs this process may use) or a list such as 0-1,3 "
        "(env CHARGEBOX_CPUS; default off)",
    )
    serve.add_argument(
        "--synchronous",
        type=str.upper,  # in any case, as CHARGEBOX_SYNCHRONOUS
        choices=SYNCHRONOUS_LEVELS,
        help="SQLite durability (env CHARGEBOX_SYNCHRONOUS; default NORMAL, survives kill -9)",
    )
    serve.add_argument(
        "--access-log", metavar="FILE|-|off", help="env CHARGEBOX_ACCESS_LOG; default - (stderr)"
    )
    serve.add_argument(
        "--trusted-proxy",
        metavar="ADDRESS",
        help="the reverse proxy's IP address: its X-Forwarded-Proto (https: Secure cookies) "
        "and X-Forwarded-For (the logged client) are believed (env CHARGEBOX_TRUSTED_PROXY; "
        "default: no one's)",
    )
    init = command("init-db", "make the schema, the admin token and the ledger key, then exit")
    init.add_argument(
        "--grant-to",
        metavar="ROLE",
        help="with a PostgreSQL --db: grant this role what the service needs (and no more)",
    )
    migrate = command(
        "migrate",
        "upgrade the database's schema to this release's, in one transaction, then exit "
        "(back it up and stop its servers first)",
    )
    migrate.add_argument(
        "--grant-to",
        metavar="ROLE",
        help="with a PostgreSQL --db (the owner's URL): grant this role too what the service "
        "needs (the roles init-db granted are found and granted anyway)",
    )
    migrate.add_argument("--force", action="store_true", help="even with servers found running")
    create = command("create-seller", "create a seller and print its API key (shown once)")
    create.add_argument("name")
    move = commands.add_parser(
        "copy",
        help="copy a SQLite deployment into an empty PostgreSQL schema, then audit it",
        description="copy a SQLite deployment (every row and seal) into an empty PostgreSQL "
        "schema made by init-db, as the schema's owner; then audit the copy with the same key",
    )
    move.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE")
    move.add_argument("--to", dest="target", required=True, metavar="OWNER_URL")
    move.add_argument(
        "--data-dir",
        type=Path,
        help="the PostgreSQL deployment's data directory: the file's ledger key and admin "
        "token are written there for its servers, and the copy's audit anchors "
        "(env CHARGEBOX_DATA_DIR; default data/)",
    )
    audit = command("audit", "re-check invariants I1-I5 straight from the database")
    audit.add_argument("--json", action="store_true", help="print the full report as JSON")
    audit.add_argument(
        "--full",
        action="store_true",
        help="verify every row, not only those after the newest audit checkpoint (progress "
        "on stderr; sales go on meanwhile)",
    )
    operations.add_commands(command)  # backup, anchors
    admin_commands.add_parsers(command)  # keys, suspension, the admin token
    return parser


def prepare(config: Config, serving: bool = False, token: bool = False) -> Config:
    """Check the database's place, open it, settle the ledger key and the schema, then the
    admin token: a refusal (ValueError) comes before any write, a generated token's too.
    `serving`: then mark the process as serving (migrations.mark_serving). Only a server
    (and `init-db`: `token`) makes an admin token where there is none; another command
    takes the one there is, or none: it acts by holding the files, and a token it made
    would be one no running server accepts (theirs set in CHARGEBOX_ADMIN_TOKEN). Nor is a
    PostgreSQL database made here (its owner's `init-db` does): its schema and key checked.
    """
    admin_commands.admin_token(config, make=False)  # one in its file: refused before a write
    if config.db_url:
        # one line naming --db if it is not there
        postgresql.connect(config.db_url, lost_after=config.peer_timeout).close()
        if not config.admin_token and not config.admin_token_path.exists():
            raise _one_of_its_own(config, "admin token", config.admin_token_path, "init-db")
    else:
        check_database_path(config.db_path)  # makes the file: after what may refuse
    database = open_database(config)
    try:
        if config.db_url:
            database.ensure_schema()
            guards.refuse_dropped_guards(guards.dropped_in(database), "(the PostgreSQL database)")
            grants.refuse_lacking(database.connection(), "(the PostgreSQL database)")
            key = _ledger_key(config, database, made_by="init-db")
            config.secrets_dir.mkdir(parents=True, exist_ok=True)  # for the anchors
            anchored = anchors.refuse_rollback(config, database, key)  # an older copy put back
            revocations.refuse_undone(config, database, anchored)  # a revoked key live in it
            if serving:
                migrations.mark_serving(config)
        else:
            with startup_lock(config):  # one start-up at a time: the key check sees a settled file
                # before a key is made beside another application's file, or it goes to WAL
                migrations.refuse_another_applications(database.connection(), str(config.db_path))
                key = _ledger_key(config, database)
                anchored = anchors.refuse_rollback(config, database, key)  # an older copy
                database.ensure_schema(ALL_MODELS)
                revocations.refuse_undone(config, database, anchored)  # a revoked key live in it
                if serving:  # before the lock goes: a migrate, which takes it, sees this server
                    migrations.mark_serving(config)
        admin = admin_commands.admin_token(config, make=serving or token)  # once nothing refused
        in_force = admin is not None and admin_commands.check_admin_token(database, config, admin)
        if serving and in_force and not config.admin_token:  # not said of one not in force
            print(f"chargebox: admin token is in {config.admin_token_path}", file=sys.stderr)
    finally:
        database.close()
    prepared = None if config.db_url else database.file.identity  # the file served (db.py)
    return dataclasses.replace(config.with_secrets(admin, key), db_file=prepared, serving=serving)


def startup_lock(config: Config) -> FileLock:
    """The lock that processes starting on one database take in turn (schema, ledger key)."""
    return FileLock(str(config.db_path) + ".lock", timeout=60, mode=0o600)


def _ledger_key(config: Config, database: Database | postgresql.Reader,
                made_by: str | None = None) -> str:  # fmt: skip
    """The ledger key, refused unless it verifies the newest seals already made.

    A key is never generated for a database that holds seals: with a new key every
    seal would look forged, so a lost key file must be restored from the backup. Nor
    where another command `made_by` made it (PostgreSQL: init-db; _one_of_its_own).
    A short key is refused, unless it is the one that already sealed this ledger.
    """
    path = config.ledger_key_path
    source = "CHARGEBOX_LEDGER_KEY" if config.ledger_key else str(path)
    sealed = seals.sealed(database)
    if not config.ledger_key and not path.exists() and sealed:
        raise ValueError(
            f"--db {_where(config)}: the ledger is sealed but its key file {path} is missing: "
            "restore it from the backup of this database (or set CHARGEBOX_LEDGER_KEY); "
            "a new key would make every seal look forged"
        )
    if made_by and not config.ledger_key and not path.exists():
        raise _one_of_its_own(config, "ledger key", path, made_by)
    key = config.ledger_key or admin_commands.stored_secret(
        path, "a ledger key", "CHARGEBOX_LEDGER_KEY", auth.new_ledger_key
    )
    checked, verified = seals.key_check(database, key.encode("utf-8")) if sealed else (0, 0)
    if checked and not verified:
        raise ValueError(
            f"--db {_where(config)}: {source} {seals.wrong_key(checked)}; restore that key "
            "from the backup of this database (a ledger key must never change)"
        )
    if len(key) < MIN_SECRET_LENGTH and not verified:
        raise ValueError(
            f"{source}: a ledger key needs at least {MIN_SECRET_LENGTH} characters, not {len(key)}"
        )
    if len(key) < MIN_SECRET_LENGTH:
        print(f"chargebox: warning: {source} is short, but it sealed this ledger", file=sys.stderr)
    if verified < checked:
        print(
            f"chargebox: warning: {checked - verified} of the {checked} newest sealed heads do "
            "not verify: run `chargebox audit`",
            file=sys.stderr,
        )
    return key


def _one_of_its_own(config: Config, what: str, path: Path, made_by: str) -> ValueError:
    """A PostgreSQL server (or command) given no secret refuses to make one of its own:
    its own ledger key would seal beside the others' with another key while nothing is
    sealed, its own admin token would be the admin on that server alone."""
    lost = " (all lost: give a new one and run rotate-admin-token)" if "token" in what else ""
    return ValueError(
        f"--db {_where(config)}: no {what} in {path}: give every app server the one "
        f"`chargebox {made_by}` made (its --data-dir's {path.name}, copied there 0600, "
        f"or CHARGEBOX_{path.name.upper()}{lost}); one of its own would not be the others'"
    )


def _init_db(config: Config, grant_to: str | None) -> int:
    if not config.db_url:
        if grant_to is not None:  # even empty: said, not passed over
            raise ValueError("--grant-to is for a PostgreSQL --db (postgresql://...)")
        prepare(config, token=True)
        print(f"chargebox: schema ready in {config.db_path}", file=sys.stderr)
        return 0
    conn = postgresql.connect(config.db_url, autocommit=True, lost_after=config.peer_timeout)
    try:
        grants.check_init_db(conn, grant_to, _where(config))  # before anything is made
        config.secrets_dir.mkdir(parents=True, exist_ok=True)
        admin_commands.admin_token(config, make=False)  # one in its file: refused first
        _ledger_key(config, postgresql.Reader(conn))  # before the schema and the token
        admin_commands.admin_token(config)
        schema.create_postgresql(conn, postgresql.described(config.db_url))
        if grant_to:
            grants.grant(conn, grant_to)
            if why := guards.above_the_guards(conn, grant_to):
                print(f"chargebox: warning: serve will refuse it: {why}", file=sys.stderr)
    finally:
        conn.close()
    granted = f"; {grant_to} may use it" if grant_to else ""
    print(
        f"chargebox: schema ready in {postgresql.described(config.db_url)}{granted}",
        file=sys.stderr,
    )
    return 0


def _where(config: Config) -> str:
    return postgresql.described(config.db_url) if config.db_url else str(config.db_path)


def _serve(config: Config) -> int:
    from chargebox.access_log import LogFile
    from chargebox.connections import listen  # waitress is needed only here
    from chargebox.server import serve

    config = dataclasses.replace(config, cpus=cpus.resolved(config.cpus))  # CPUs it may use
    log = LogFile(config.access_log)  # a log that cannot be opened, or a taken port, is
    listener = listen(config)  # refused before any file is made
    try:
        if config.db_url:
            with postgresql.connect(
                config.db_url, autocommit=True, lost_after=config.peer_timeout
            ) as conn:
                guards.refuse_a_role_above_the_guards(conn, "(the PostgreSQL database)")
        config = prepare(config, serving=True)
    except BaseException:
        listener.close()
        raise
    return serve(config, lambda line: print(line, flush=True), listener, log)


def _create_seller(config: Config, name: str) -> int:
    service = Chargebox(prepare(config))
    try:
        seller, api_key = service.create_seller(name)
    finally:
        service.close()
    print(json.dumps({**seller, "api_key": api_key}, ensure_ascii=False))
    print("Store this API key now: it is shown only once.", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. A reader of its output that leaves early (`audit
    --json | head`) ends it quietly with 1, as a pipe's writer should: no trace."""
    try:
        code = _command(argv)
        sys.stdout.flush()  # here, not as Python exits, where a closed pipe is a trace
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit flushes too
        return 1


def _command(argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # one line per queued request
    args = _parser().parse_args(argv)
    if args.command != "serve":  # it says why in its one line; a server logs why it is 503
        logging.getLogger(pg_driver.UNAVAILABLE_LOG).setLevel(logging.ERROR)
    try:
        config = from_arguments(args)
        for name in settings.unknown_settings():
            print(f"chargebox: warning: {name} is no setting of chargebox, and is ignored "
                  "(README, Configuration, lists them)", file=sys.stderr)  # fmt: skip
        if args.command == "init-db":
            return _init_db(config, args.grant_to)
        if args.command == "migrate":
            lock = lambda: startup_lock(config)  # noqa: E731
            done = migrations.migrate(config, lock, args.grant_to, args.force)
            print(f"chargebox: {done}", file=sys.stderr)
            return 0
        if args.command == "copy":
            from chargebox import moving

            return moving.run(config, args.source, args.target)
        if args.command == "serve":
            return _serve(config)
        if args.command in (*admin_commands.COMMANDS, "create-seller", "anchors"):
            refuse_a_new_file(config)  # only serve and init-db make one
        if args.command in operations.COMMANDS:
            return operations.run(config, args)
        if args.command in admin_commands.COMMANDS:
            return admin_commands.run(args, config, prepare)
        if args.command == "create-seller":
            return _create_seller(config, args.name)
        return operations.audit(config, args.json, args.full)
    except (sqlite3.DatabaseError, peewee.DatabaseError, Damaged) as exc:
        # A file SQLite cannot read (corrupt, or not what its header says).
        reason = str(exc.__cause__ or exc).strip() or type(exc).__name__
        damaged = primary_code(exc.__cause__ or exc) in DAMAGED_CODES
        hint = "; restore a backup (README, Restore)" if damaged else ""
        print(f"chargebox: --db {_where(config)}: {reason}{hint}", file=sys.stderr)
        return 2
    except (ValueError, ChargeboxError) as exc:
        message = exc.message if isinstance(exc, ChargeboxError) else str(exc)
        if isinstance(exc, Unavailable) and isinstance(exc.__cause__, ValueError):
            # a PostgreSQL it could not reach, and why (pg_driver.connect's one line)
            message = str(exc.__cause__)
        print(f"chargebox: {message}", file=sys.stderr)
        return 2
    except pg_driver.driver_errors() as exc:  # a role without the rights, no schema there
        print(f"chargebox: --db {_where(config)}: {pg_driver.in_words(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file to write on a read-only or full disk, a lock held too long
        if isinstance(exc, BrokenPipeError):
            raise  # a reader that left early (`statement --csv | head -1`): main's, quietly
        message, status = in_words(exc)
        print(f"chargebox: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
