"""psycopg 3 at the edge: connecting, chargebox's SQL in psycopg's parameters, and
psycopg's errors in chargebox's tree; and which pg_dump can dump a given server.

chargebox's SQL is written once, with SQLite's `?` and `:name` parameters; here
it is handed to psycopg as `%s` and `%(name)s`. The service's database on
PostgreSQL (`Database`, `Write`) is postgresql.py's; nothing here holds a lock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import select
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from chargebox.config import without_settings
from chargebox.errors import (
    Deadlocked,
    IntegrityViolation,
    LockTimeout,
    NotGranted,
    Unavailable,
    phrase,
)

log = logging.getLogger("chargebox.server")


def _not_twice(record: logging.LogRecord) -> bool:
    """psycopg's WARNING that a pipeline could not be ended, logged while the error that
    ended it (a lost connection) goes on up to be answered: a second word, naming only an
    object's address, for what chargebox already answers (503) and says."""
    said = record.msg == "error ignored terminating %r: %s" and isinstance(record.args, tuple)
    return not (said and type(record.args[0]).__name__ == "Pipeline")


logging.getLogger("psycopg").addFilter(_not_twice)

# A grant revoked under a running server (start-up refuses a role without them:
# grants.refuse_lacking): each request that needs it is 503, and the log says why, once.
NOT_GRANTED = phrase(
    "the database refused this server a privilege it needs; an operator must grant it"
    " (chargebox init-db --grant-to ROLE, with the schema owner's URL and the servers'"
    " --data-dir)"
)
_said: set[str] = set()
# Where Debian keeps each PostgreSQL version's programs (/usr/bin's pg_dump is a wrapper).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/pg_dump"

# A quoted literal (left alone), a `?`, a `:name` (not a `::cast`), or a `%` to escape.
_PARAMETER = re.compile(r"'(?:[^']|'')*'|\?|(?<!:):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=512)  # a few dozen statements, each converted once
def to_psycopg(sql: str) -> str:
    """SQLite's parameter style as psycopg's: `?` -> `%s`, `:name` -> `%(name)s`."""

    def swap(match: re.Match) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _PARAMETER.sub(swap, sql)


# What a command adds to PostgreSQL's own words when it refuses (by SQLSTATE).
_HINTS = {
    "42501": " (init-db, migrate and copy need the schema owner's URL; serve, the app role's)",
    "42P01": " (no chargebox schema there: run `chargebox init-db` first)",
}


def driver_errors() -> tuple[type[BaseException], ...]:
    """psycopg's errors, for a command to say in one line; none without the driver."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def in_words(exc: BaseException) -> str:
    """A PostgreSQL refusal as one line: its primary message (never its detail, which can
    quote a row) and a hint for the commonest mistakes."""
    diag = getattr(exc, "diag", None)
    said = (diag.message_primary if diag is not None else None) or type(exc).__name__
    return said + _HINTS.get(getattr(exc, "sqlstate", None) or "", "")


def described(url: str) -> str:
    """A PostgreSQL URL without its password, fit for a message or a log: up to the last
    `@` (a password may hold an unencoded `@`, `/` or `?`; an `@` in the query hides the
    host too, which a message can spare), and every `...password=` parameter too
    (`sslpassword=`, the client key's, was shown whole: helper-113)."""
    hidden = re.sub(r"^([\w+.-]+://[^:/@]*):.*@", r"\1:***@", url)  # postgres+psycopg:// too
    return re.sub(r"([?&])([^=&]*)=([^&]*)", _hide_a_password, hidden)


def _hide_a_password(parameter: re.Match) -> str:
    """A query parameter, its value hidden if its name (as libpq reads it: %-decoded, so
    `%70assword`) ends in `password` (`sslpassword`, the client key's, too)."""
    start, name, value = parameter.groups()
    if urllib.parse.unquote(name).lower().endswith("password"):
        value = "***"
    return f"{start}{name}={value}"


# A peer that stops answering without a word (its host powered off or cut off: no FIN,
# no RST) is given up within `lost_after` seconds at both ends of a connection, not after
# Linux's defaults (two hours of keepalive silence, ~15 minutes of retransmissions): a
# lost app server's transaction ends, letting go of its sellers' rows and its ids
# (settled.py), and an app thread waiting for a lost PostgreSQL gets Unavailable (503).
# This end is libpq's (keepalives, TCP_USER_TIMEOUT); the server's end is the session's
# (the same settings, set as it opens). A live peer's kernel answers both, however busy
# the process. The service and its commands give CHARGEBOX_PEER_TIMEOUT; `copy` more.


def _keepalives(seconds: int) -> tuple[dict, dict]:
    """libpq's parameters and the server session's settings that give up on a silent peer
    after `seconds`: probes from half of it on, every second."""
    idle = max(1, seconds // 2)
    count = max(1, seconds - idle)
    here = {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": 1,
            "keepalives_count": count, "tcp_user_timeout": seconds * 1000}  # fmt: skip
    there = {"tcp_keepalives_idle": idle, "tcp_keepalives_interval": 1,
             "tcp_keepalives_count": count, "tcp_user_timeout": seconds * 1000}  # fmt: skip
    return here, there


def hung_up(conn) -> bool:
    """Whether the server of an idle connection has ended its session (restarted, or the
    session was terminated): something came to read where nothing was asked (its last
    word, or the end). A thread's connection idle through a restart would otherwise fail
    its next use, one 503 for each thread, minutes later (helper-120). (A connection that
    LISTENs would have a NOTIFY to read: chargebox has none.)"""
    if conn.info.transaction_status.name != "IDLE":  # in a transaction: its own to read
        return False
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us
        return True


TIMED_OUT = "25P04"  # transaction_timeout's SQLSTATE (psycopg's TransactionTimeout, 3.2 on)


def left_idle(config) -> str:
    """Columns for a write transaction to read as it begins: left idle between two round
    trips for the peer timeout by its server (frozen, or its host lost), it ends; and on
    PostgreSQL 17 and newer, once it has run its busy timeout and the peer timeout more, it
    ends whatever it waits for (a process frozen in the middle of a pipeline leaves its
    session active, never idle): TransactionTimeout, Unavailable. Asked of the server, not
    guessed from the version a pooler reports; older servers have no such setting (NULL).
    A frozen process's kernel still answers keepalives. A COMMIT waiting for a synchronous
    standby is not cut short: PostgreSQL lets that wait finish, and the setting ends with
    it."""
    seconds = int(config.peer_timeout)
    most = f"{int(config.busy_timeout_ms) + 1000 * seconds}ms"
    return (f"set_config('idle_in_transaction_session_timeout', '{seconds}s', true),"
            " CASE WHEN current_setting('transaction_timeout', true) IS NOT NULL"
            f" THEN set_config('transaction_timeout', '{most}', true) END")  # fmt: skip


_named: dict[str, str] = {}  # what every connection of this process is named, once set


def name_sessions(name: str) -> None:
    """Name every PostgreSQL session this process (and its forked children) opens from now
    on (`application_name`; as a keyword it wins over one in the URL)."""
    _named["application_name"] = name


def connect(url: str, autocommit: bool = False, timeout: int = 10, *, lost_after: int,
            flag: str = "--db"):  # fmt: skip
    """A psycopg connection, or one line naming the database as `flag` gave it (never its
    password); either end gives the other up after `lost_after` seconds of silence.
    (Linux counts a receive window kept shut that long as silence too: a bulk COPY
    gives more.)"""
    try:
        import psycopg  # only a PostgreSQL deployment needs the driver
    except ImportError:
        raise ValueError(
            f"{flag} {described(url)}: PostgreSQL needs its driver: "
            'pip install -e ".[postgresql]" (psycopg 3)'
        ) from None

    conn = None
    try:
        here, there = _keepalives(lost_after)
        # The catalogue's words as guards.py and constraints.py compare them, whatever the
        # role or database sets (on, every name of a definition comes quoted).
        there["quote_all_identifiers"] = "off"
        conn = psycopg.connect(  # UTF8 whatever the URL or PGCLIENTENCODING says (helper-118)
            url,
            autocommit=autocommit,
            connect_timeout=timeout,
            client_encoding="UTF8",
            **here,
            **_named,
        )
        settings = ", ".join("set_config(%s, %s, false)" for _ in there)
        values = tuple(str(part) for pair in there.items() for part in pair)
        (server_pid, *_) = conn.execute(
            f"SELECT pg_backend_pid(), {settings}", values, prepare=False
        ).fetchone()
        encoding = conn.info.parameter_status("server_encoding")
        if encoding not in (None, "UTF8"):  # SQL_ASCII: psycopg gives text as bytes
            raise ValueError(f"{flag} {described(url)}: the database's encoding is"
                             f" {encoding}; chargebox needs UTF8 (CREATE DATABASE ..."
                             " ENCODING 'UTF8')")  # fmt: skip
        if _behind_a_pooler(conn, server_pid):
            conn.prepare_threshold = None
        if not autocommit:
            conn.commit()  # the probe's transaction (rolled back, its settings would go too)
        return conn
    except ValueError:  # connected, but to a database it cannot use
        if conn is not None:
            conn.close()
        raise
    except psycopg.Error as exc:
        if conn is not None:
            conn.close()
        raise ValueError(f"{flag} {described(url)}: cannot connect ({_first_line(exc)})") from None


def _behind_a_pooler(conn, server_pid: int) -> bool:
    """Whether a pooler (pgbouncer) stands between us and PostgreSQL: it answers the
    start-up with a backend id of its own, not the server process's.

    psycopg prepares a statement on the server after its fifth run on a connection.
    Behind pgbouncer in transaction mode (before 1.21, and Debian 12 has 1.18) the
    next transaction may run on another server connection, which never saw it:
    `prepared statement "_pg3_0" does not exist`. So there, and only there, psycopg
    prepares nothing; straight to PostgreSQL the prepares stay.
    """
    return server_pid != conn.info.backend_pid


class Reader:
    """Reads over one psycopg connection, in chargebox's SQL (what seals.key_check takes)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        return self.conn.execute(to_psycopg(sql), params).fetchall()

    def table_names(self) -> set[str]:
        found = self.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {name for (name,) in found}


# --- the service's database on PostgreSQL ----------------------------------------------------


def pipelined(conn):
    """The connection in pipeline mode, where the driver has it (libpq 14 or later)."""
    import psycopg

    return conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()


def as_dicts(cursor) -> list[dict]:
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors in chargebox's tree: a refused write is a bug (the schema's
    guards fired), a lock not had in time or a lost server is 503, retry."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeout("the database is busy; retry shortly") from exc
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityViolation("the database refused a write: {exc}", exc=exc) from exc
    except psycopg.errors.DeadlockDetected as exc:
        raise Deadlocked("the database is busy; retry shortly") from exc
    except psycopg.errors.InsufficientPrivilege as exc:  # a grant revoked under the server
        _say_once(f"the database refused this server's role: {exc}".splitlines()[0]
                  + "; grant it again: chargebox init-db --grant-to ROLE, with the schema "
                  "owner's URL and the servers' --data-dir")  # fmt: skip
        raise NotGranted(NOT_GRANTED) from exc
    except (
        psycopg.OperationalError,
        psycopg.errors.SerializationFailure,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.IdleInTransactionSessionTimeout,  # its session ended: the peer timeout
    ) as exc:
        tell(f"PostgreSQL refused or lost a request: {_why(exc)}")
        raise Unavailable("the database is busy or unavailable; retry shortly") from exc
    except psycopg.errors.InternalError as exc:  # 25P04: a write ran past its bound (17 on)
        if exc.sqlstate != TIMED_OUT:
            raise
        raise Unavailable("the database is busy or unavailable; retry shortly") from exc


_told: dict[str, float] = {}  # when the log last said each reason requests were 503
UNAVAILABLE_LOG = "chargebox.unavailable"


def tell(line: str) -> None:
    """Log why requests are 503, once a minute a reason (helper-139: the log said nothing);
    a command, which says why in its one line, quiets UNAVAILABLE_LOG (cli)."""
    if time.monotonic() - _told.get(line, -60.0) >= 60:
        _told[line] = time.monotonic()
        logging.getLogger(UNAVAILABLE_LOG).warning("%s (each such request 503)", line)


def _why(exc: BaseException) -> str:
    """A server's refusal in in_words' words (no row's), else libpq's first line (helper-140)."""
    diag = getattr(exc, "diag", None)
    from_server = getattr(diag, "message_primary", None) or getattr(exc, "sqlstate", None)
    return in_words(exc) if from_server else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """libpq's words for `exc`, its first line (not a DETAIL after it), or its type's name."""
    lines = (line.strip() for line in str(exc).splitlines())
    return next((line for line in lines if line), type(exc).__name__)


def _say_once(line: str) -> None:
    """Log `line` the first time this process meets it (not once a request)."""
    if line not in _said:
        _said.add(line)
        log.error("%s", line)


def pg_dump_for(conninfo: str) -> str:
    """A pg_dump that can dump the server at `conninfo`: of its major version or newer (a
    pg_dump refuses a newer server than itself), or one line saying what to install."""
    import psycopg

    try:
        with psycopg.connect(conninfo, connect_timeout=30) as conn:
            server = conn.info.server_version // 10_000
    except psycopg.Error:
        server = 0  # not asked: pg_dump says why, in its words
    found = pg_dumps()
    program = next((path for major, path in found if major >= server), None)
    if program is not None:
        return program
    if not found:
        raise ValueError("pg_dump not found: install PostgreSQL's client programs, or back up"
                         " with pg_dump or pg_basebackup yourself (README, Backups and"
                         " restores)")  # fmt: skip
    major, newest = max(found)
    raise ValueError(f"the server is PostgreSQL {server}, newer than any pg_dump here (the"
                     f" newest: {major}, {newest}), and a pg_dump dumps no newer server"
                     f" than itself: install PostgreSQL {server}'s client programs"
                     f" (Debian: postgresql-client-{server}) or put its pg_dump first on"
                     " PATH")  # fmt: skip


def find_pg_dump(at_least: int = 0) -> str | None:
    """A pg_dump of PostgreSQL `at_least` or newer: the one on PATH if it is, else the
    newest of Debian's versions that is."""
    return next((path for major, path in pg_dumps() if major >= at_least), None)


def pg_dumps() -> list[tuple[int, str]]:
    """Each pg_dump here, with its major version (0: it would not say), each asked once:
    the one on PATH first, then Debian's, newest first."""
    on_path = shutil.which("pg_dump")
    debian = [str(path) for path in Path("/").glob(PG_BIN_GLOB.lstrip("/"))]
    found = [(_major(path), os.path.abspath(path))
             for path in dict.fromkeys([on_path, *debian]) if path]  # fmt: skip
    first = found[:1] if on_path else []
    return first + sorted(found[len(first) :], reverse=True)


def _major(program: str) -> int:
    """The major version `program --version` says (`pg_dump (PostgreSQL) 15.18 ...`); 0 if
    it says none, cannot run, or takes over 10 s. It gets none of chargebox's settings."""
    try:
        said = subprocess.run([program, "--version"], capture_output=True, text=True,
                              timeout=10, env=without_settings())  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return 0
    found = re.search(r"\(PostgreSQL\) (\d+)", said.stdout)
    return int(found.group(1)) if found else 0
