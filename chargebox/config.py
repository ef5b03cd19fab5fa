"""One frozen Config for a chargebox process, and every default in one place.

Built once, from argv and the environment, by `cli`; everything else receives
it. Nothing else in the package reads the environment. The admin token lives
here too, so the dataclass hides it from repr(): a token must never reach a log.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path

DEFAULT_DB = Path("data") / "chargebox.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Fewer threads than concurrent keep-alive clients makes waitress queue requests
# behind each other (docs/stack-notes.md, trap 8); threads blocked on I/O or on the group
# writer cost little, so the default leaves room for 64 busy clients.
DEFAULT_THREADS = 64
DEFAULT_MAX_AMOUNT = 1_000_000_000
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_BALANCE = 10**15
MAX_PHONE_TOTAL = 2**63 - 1  # a number's total charged: a 64-bit integer on both backends
DEFAULT_BUSY_TIMEOUT_MS = 10_000
# Client connections one server process holds (idle keep-alive ones included); past
# it, the connections waiting longest are closed (connections.py). Needs as many open
# files: the limit is raised at start, within the hard `ulimit -n`.
DEFAULT_MAX_CONNECTIONS = 10_000
# A request's line, headers and body must arrive within this many seconds of its
# first byte; a keep-alive connection may sit idle this long between requests.
DEFAULT_REQUEST_TIMEOUT = 20
DEFAULT_IDLE_TIMEOUT = 60
# PostgreSQL: a peer that has said nothing this many seconds (its host lost without a
# word) is given up, at both ends of each connection, and a write left idle between two
# round trips this long ends (pg_driver.py).
DEFAULT_PEER_TIMEOUT = 10
# Credit requests one seller may have waiting for the admin. A seller asks again
# after the admin decides; ten waiting at once is already unusual, and the cap keeps
# one seller (or a looping script) from burying everyone else's requests.
DEFAULT_MAX_PENDING_REQUESTS = 10
MAX_PENDING_REQUESTS_LIMIT = 100_000
# NORMAL in WAL mode: a committed transaction survives a crash of the process
# (kill -9); only an OS crash or power loss can lose the last few commits.
# FULL also survives power loss, at about a third of the write rate.
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SYNCHRONOUS = "NORMAL"
ADMIN_TOKEN_FILE = "admin_token"
LEDGER_KEY_FILE = "ledger_key"
# Shorter admin tokens and ledger keys are refused. Generated ones have 43 characters
# (32 random bytes, base64); 32 characters still carry 128 bits when written in hex.
MIN_SECRET_LENGTH = 32
MAX_PORT = 65535
# `--db` names a PostgreSQL database by URL; anything else is an SQLite file.
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_DATA_DIR = Path("data")
DEFAULT_ACCESS_LOG = "-"
# The server anchors the sellers' sealed heads outside the database this often (anchors.py):
# a rollback that loses only the sales of the last interval goes unnoticed.
DEFAULT_ANCHOR_SECONDS = 10
ANCHORS_FILE = "anchors"  # in --data-dir for PostgreSQL; <db>.anchors beside an SQLite file


@dataclasses.dataclass(frozen=True)
class Config:
    db_path: Path = DEFAULT_DB
    # A PostgreSQL URL (`--db postgresql://...`) instead of db_path; it may hold a password.
    db_url: str | None = dataclasses.field(default=None, repr=False)
    # Where the admin token and ledger key files live when the database is not a file.
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    threads: int = DEFAULT_THREADS
    processes: int = 1  # server processes on the one port (server.py)
    # `--cpus`: "off", "auto" or a list ("0-1,3"), kept as "auto" or the CPUs it names (none:
    # off): each server process's threads on one of them, its writer on a spare one if there
    # is one (cpus.py). Only its spelling is checked here: whether this process may run on
    # them, when the server starts (cpus.resolved); other commands never pin.
    cpus: str | tuple[int, ...] = ()
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    # The HMAC key that seals the ledger; kept outside the database file (ledger.py).
    ledger_key: str | None = dataclasses.field(default=None, repr=False)
    # The SQLite file start-up prepared (device, inode): another put in its place is refused.
    db_file: tuple[int, int] | None = None
    serving: bool = False  # a server's (cli.prepare): its damaged file is told in its log
    max_amount: int = DEFAULT_MAX_AMOUNT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    synchronous: str = DEFAULT_SYNCHRONOUS
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per server process
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT  # seconds, first byte to last
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT  # seconds between keep-alive requests
    peer_timeout: int = DEFAULT_PEER_TIMEOUT  # seconds of a PostgreSQL peer's silence
    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS  # per seller (services.py)
    # Concurrent writes share one transaction (each in its own savepoint), see writer.py.
    group_commit: bool = True
    # The access log (access_log.py): "-" is stderr, "off" none, anything else a file
    # that every server process appends whole lines to.
    access_log: str = DEFAULT_ACCESS_LOG
    anchor_seconds: int = DEFAULT_ANCHOR_SECONDS  # between two anchorings of the heads
    anchors_file: Path | None = None  # CHARGEBOX_ANCHORS: elsewhere than beside the key
    # The reverse proxy whose X-Forwarded-Proto and -For are believed (proxy.py); none: no one's.
    trusted_proxy: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= MAX_PORT:
            raise ValueError(f"--port {self.port}: must be 0 (any free port) to {MAX_PORT}")
        if self.synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError("synchronous (--synchronous, CHARGEBOX_SYNCHRONOUS) must be one of "
                             f"{', '.join(SYNCHRONOUS_LEVELS)}")  # fmt: skip
        if not 1 <= self.max_amount <= MAX_BALANCE:
            raise ValueError(
                f"max_amount (CHARGEBOX_MAX_AMOUNT) must be between 1 and {MAX_BALANCE}"
            )
        if not 1 <= self.threads <= 1024:
            raise ValueError("threads (--threads, CHARGEBOX_THREADS) must be between 1 and 1024")
        if not 1 <= self.processes <= 64:
            raise ValueError(
                "processes (--processes, CHARGEBOX_PROCESSES) must be between 1 and 64"
            )
        object.__setattr__(self, "cpus", cpu_setting(self.cpus))
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes (CHARGEBOX_MAX_BODY_BYTES) must be at least 1024")
        if not 16 <= self.max_connections <= 1_000_000:
            raise ValueError("max_connections (CHARGEBOX_MAX_CONNECTIONS) must be 16 to 1,000,000")
        for name in ("request_timeout", "idle_timeout", "peer_timeout"):
            if not 1 <= getattr(self, name) <= 3600:
                raise ValueError(f"{name} (CHARGEBOX_{name.upper()}) must be 1 to 3600 seconds")
        if not self.access_log:
            raise ValueError("access_log (--access-log) must be a file, '-' (stderr) or 'off'")
        if self.trusted_proxy is not None:
            object.__setattr__(self, "trusted_proxy", _address(self.trusted_proxy))
        if not 1 <= self.anchor_seconds <= 3600:
            raise ValueError("anchor_seconds (CHARGEBOX_ANCHOR_SECONDS) must be 1 to 3600")
        if not 1 <= self.max_pending_requests <= MAX_PENDING_REQUESTS_LIMIT:
            raise ValueError(
                "max_pending_requests (CHARGEBOX_MAX_PENDING_REQUESTS) must be between 1 and "
                f"{MAX_PENDING_REQUESTS_LIMIT:,}"
            )

    @property
    def secrets_dir(self) -> Path:
        """Beside the database file; for PostgreSQL, `--data-dir` (data/ by default)."""
        return self.data_dir if self.db_url else self.db_path.parent

    @property
    def admin_token_path(self) -> Path:
        """Where a generated admin token is kept."""
        return self.secrets_dir / ADMIN_TOKEN_FILE

    @property
    def ledger_key_path(self) -> Path:
        """Where a generated ledger key is kept: never inside the database."""
        return self.secrets_dir / LEDGER_KEY_FILE

    def ledger_key_at_hand(self) -> str | None:
        """The ledger key set, or the one in its file; None if neither. A file that holds
        none (empty, or not UTF-8) is said in one line naming it: the audit said "no ledger
        key: keep the ledger_key file beside the database" of a file that was there."""
        if self.ledger_key or not self.ledger_key_path.exists():
            return self.ledger_key
        return secret_in(self.ledger_key_path, "ledger key", "CHARGEBOX_LEDGER_KEY")

    @property
    def anchors_path(self) -> Path:
        """The anchors of the sealed heads (anchors.py): beside the key, or CHARGEBOX_ANCHORS."""
        if self.anchors_file is not None:
            return self.anchors_file
        if self.db_url:
            return self.data_dir / ANCHORS_FILE
        return anchors_beside(self.db_path)

    def with_secrets(self, admin_token: str | None, ledger_key: str) -> Config:
        return dataclasses.replace(self, admin_token=admin_token, ledger_key=ledger_key)


_NUMERIC = {f"CHARGEBOX_{field.upper()}": field for field in (
    "threads", "processes", "max_amount", "max_body_bytes", "busy_timeout_ms", "max_connections",
    "request_timeout", "idle_timeout", "peer_timeout", "max_pending_requests", "anchor_seconds",
)}  # fmt: skip
# Every variable env_defaults reads (README, Configuration, lists them).
SETTINGS = frozenset({*_NUMERIC, "CHARGEBOX_DB", "CHARGEBOX_DATA_DIR", "CHARGEBOX_ADMIN_TOKEN",
                      "CHARGEBOX_LEDGER_KEY", "CHARGEBOX_ANCHORS", "CHARGEBOX_GROUP_COMMIT",
                      "CHARGEBOX_CPUS", "CHARGEBOX_ACCESS_LOG", "CHARGEBOX_TRUSTED_PROXY",
                      "CHARGEBOX_SYNCHRONOUS"})  # fmt: skip
# The test suite's own (README, Tests), which the package never reads: no warning for them.
SUITE = frozenset({"CHARGEBOX_ARTIFACTS", "CHARGEBOX_CHROMIUM", "CHARGEBOX_CRASH_ROUNDS",
                   "CHARGEBOX_CRASH_SEED", "CHARGEBOX_FUZZ_EXAMPLES", "CHARGEBOX_FUZZ_SEED",
                   "CHARGEBOX_MODEL_PROFILE"})  # fmt: skip


def unknown_settings(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The CHARGEBOX_ variables set that are no setting, for a warning: a misspelt one is
    otherwise ignored (CHARGEBOX_DATABASE_URL served a new SQLite file; helper-139)."""
    known = SETTINGS | SUITE
    return sorted(n for n in environ if n.startswith("CHARGEBOX_") and n not in known)


def env_defaults(environ: Mapping[str, str] = os.environ) -> dict:
    """The settings the environment provides (argv may override them)."""
    values: dict = {}
    if environ.get("CHARGEBOX_DB"):
        values.update(database_setting(environ["CHARGEBOX_DB"]))
    if environ.get("CHARGEBOX_DATA_DIR"):
        values["data_dir"] = Path(environ["CHARGEBOX_DATA_DIR"])
    if environ.get("CHARGEBOX_ADMIN_TOKEN"):
        token = environ["CHARGEBOX_ADMIN_TOKEN"]
        values["admin_token"] = checked_admin_token(token, "CHARGEBOX_ADMIN_TOKEN")
    if environ.get("CHARGEBOX_LEDGER_KEY"):
        values["ledger_key"] = environ["CHARGEBOX_LEDGER_KEY"]
    if environ.get("CHARGEBOX_ANCHORS"):
        values["anchors_file"] = Path(environ["CHARGEBOX_ANCHORS"])
    for name, field in _NUMERIC.items():
        if environ.get(name):
            values[field] = _positive_int(name, environ[name])
    if environ.get("CHARGEBOX_GROUP_COMMIT"):
        values["group_commit"] = _on_or_off("CHARGEBOX_GROUP_COMMIT", environ)
    if environ.get("CHARGEBOX_CPUS"):
        values["cpus"] = environ["CHARGEBOX_CPUS"]
    if environ.get("CHARGEBOX_ACCESS_LOG"):
        values["access_log"] = environ["CHARGEBOX_ACCESS_LOG"]
    if environ.get("CHARGEBOX_TRUSTED_PROXY"):
        values["trusted_proxy"] = environ["CHARGEBOX_TRUSTED_PROXY"]
    if environ.get("CHARGEBOX_SYNCHRONOUS"):
        level = environ["CHARGEBOX_SYNCHRONOUS"]
        if level.upper() not in SYNCHRONOUS_LEVELS:
            choices = ", ".join(SYNCHRONOUS_LEVELS)
            raise ValueError(f"CHARGEBOX_SYNCHRONOUS must be one of {choices}, not {level!r}")
        values["synchronous"] = level.upper()
    return values


def share_metrics_through(directory: Path) -> None:
    """Name the directory where forked server processes share their metrics.

    prometheus-client takes it from this variable, which it reads as each process opens
    its file; set here, before the fork, it is inherited. The one write to the
    environment in the package, kept beside its reads.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def without_settings() -> dict[str, str]:
    """This process's environment without chargebox's settings, for a program it runs
    (pg_dump): CHARGEBOX_* may hold the ledger key, the admin token and a password, and
    a child's environment is readable by every process of its user."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CHARGEBOX_")}


def database_setting(text: str) -> dict:
    """`--db` or CHARGEBOX_DB as Config fields: a PostgreSQL URL, or an SQLite file."""
    if text.startswith(POSTGRESQL_SCHEMES):
        return {"db_url": text}
    return {"db_path": Path(text)}


def secret_in(path: Path, what: str, variable: str) -> str:
    """The secret in the file at `path`; ValueError naming it if it holds none (empty, or
    not UTF-8 text): "no ledger key" was said of a file that was there."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        secret = ""
    if not secret:
        raise ValueError(f"{path}: holds no {what} (it is empty or not text): put back your "
                         f"copy of it (kept apart), or set {variable}")  # fmt: skip
    return secret


def anchors_beside(db_path: Path) -> Path:
    """The anchors file of an SQLite file, beside it (`<db>.anchors`), when no
    CHARGEBOX_ANCHORS names another."""
    return db_path.with_name(f"{db_path.name}.{ANCHORS_FILE}")


def from_arguments(args) -> Config:
    """The Config of a command: the environment's settings, then its options (argparse's
    Namespace: each option's dest is its Config field)."""
    values = env_defaults()
    if getattr(args, "db", None) is not None:
        values.pop("db_url", None)
        values.pop("db_path", None)
        values.update(database_setting(args.db))
    for name in ("data_dir", "host", "port", "threads", "processes", "cpus", "synchronous",
                 "access_log", "trusted_proxy"):  # fmt: skip
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return Config(**values)


def checked_admin_token(token: str, source: str) -> str:
    """`token` if an operator may use it: MIN_SECRET_LENGTH visible ASCII characters or more.

    Visible ASCII because it travels in an HTTP header (and is typed into a form).
    """
    if len(token) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"{source}: an admin token needs at least {MIN_SECRET_LENGTH} characters, not "
            f"{len(token)} (leave it unset to have one generated)"
        )
    if not all("!" <= char <= "~" for char in token):
        raise ValueError(
            f"{source}: an admin token may hold only visible ASCII characters (no spaces)"
        )
    return token


_SWITCHES = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def _address(text: str) -> str:
    """`--trusted-proxy`'s value: one IP address, as the server sees it as a peer; an
    IPv4-mapped one as its IPv4 address (`::ffff:127.0.0.1` was kept as `::ffff:7f00:1`,
    which no peer is ever named: the proxy was silently not trusted)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(
            f"--trusted-proxy (CHARGEBOX_TRUSTED_PROXY) must be one IP address, not {text!r}"
        ) from None
    return str(getattr(address, "ipv4_mapped", None) or address)


CPU_LIMIT = 8192  # CPU numbers go up to 8191 (Linux's largest NR_CPUS)
CPUS_SETTING = "--cpus (CHARGEBOX_CPUS)"  # how a refusal names it


def cpu_setting(value: str | tuple[int, ...]) -> str | tuple[int, ...]:
    """`--cpus` as Config keeps it: "auto", or the CPUs named ("0-1, 3": numbers and ranges),
    in order of number, none for "off"; a spelling it cannot read is a ValueError."""
    name = CPUS_SETTING
    if not isinstance(value, str):
        if not isinstance(value, tuple | list) or not all(
            type(cpu) is int and 0 <= cpu < CPU_LIMIT for cpu in value
        ):
            raise ValueError(f"{name}: CPUs are numbers from 0 to {CPU_LIMIT - 1}")
        return tuple(sorted(set(value)))
    text = value.strip().lower()
    if text in ("off", "auto"):
        return () if text == "off" else text
    chosen: set[int] = set()
    for part in text.split(","):
        low, dash, high = (end.strip() for end in part.partition("-"))
        high = high if dash else low
        if not all(_cpu_number(end) for end in (low, high)) or int(high) < int(low):
            raise ValueError(
                f"{name} must be off, auto or CPUs from 0 to {CPU_LIMIT - 1} such as 0-1,3,"
                f" not {value[:40]!r}"
            )
        chosen.update(range(int(low), int(high) + 1))
    return tuple(sorted(chosen))


def _cpu_number(text: str) -> bool:
    return len(text) <= 6 and text.isascii() and text.isdigit() and int(text) < CPU_LIMIT


def _on_or_off(name: str, environ: Mapping[str, str]) -> bool:
    text = environ[name]
    if text.lower() not in _SWITCHES:
        raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, not {text!r}")
    return _SWITCHES[text.lower()]


def digits(text: str) -> int:
    """An argparse type: a number in ASCII digits, whose range Config checks (a `-` too,
    said as out of range): no `+`, space, `_` or other script's digits, which int() would
    take (argparse says so)."""
    unsigned = text.removeprefix("-")
    signed_zero = unsigned != text and not unsigned.strip("0")  # `-0`: would be port 0
    if not (unsigned.isascii() and unsigned.isdigit()) or signed_zero:
        raise argparse.ArgumentTypeError(f"must be a whole number in digits 0-9, not {text!r}")
    return int(text)


def whole_number(high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `high` in ASCII digits (argparse says
    so, exit 2): no sign, space, `_` or other script's digits, which int() would take."""

    def parsed(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from 1 to {high}, not {text!r}"
            )
        return int(text)

    return parsed


def _positive_int(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{name} must be a positive integer, not {text!r}")
    return int(text)
