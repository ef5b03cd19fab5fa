"""The access log and the request id: one line per request, and `X-Request-Id` on every answer.

`AccessLog` wraps the WSGI application: it gives each request its id (the
client's `X-Request-Id` when short and plain, else a new one), stamps it on
the response, and writes one logfmt line when the application has answered (a
streamed answer, a statement, when it ends, with `cut=1` if it was cut short):
time, id, method, path (never the query string, and no segment that could be a
secret, nor an admin token this process knows: `without_secrets`), status, duration,
who, client, pid. Nothing else of the request (no header, cookie, body or query) is logged.
Each line is one `write()` on an O_APPEND descriptor, so processes never mix lines.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable

from chargebox.config import MIN_SECRET_LENGTH

_log = logging.getLogger("chargebox.server")

ENVIRON_ID = "chargebox.request_id"
ENVIRON_WHO = "chargebox.principal"  # set by the web layer once a caller is known
OFF, STDERR = "off", "-"
# A client's own id is kept when it is this plain (a proxy's $request_id, a UUID);
# anything else is replaced, so that the id can go into a log line and a header as is.
CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_PATH = 512  # characters of a (escaped) path kept in a line
# Bytes logged as they are: visible ASCII but for the quote, backslash, '%' and '='.
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord(c) for c in '"\\%='}
_ESCAPES = {byte: chr(byte) if byte in _PLAIN else f"%{byte:02X}" for byte in range(256)}
_NEEDS_ESCAPE = re.compile(r'[^\x21-\x7e]|["\\%=]')
# A secret sent in a path by mistake: a seller key, or any segment as long as an admin
# token may be (MIN_SECRET_LENGTH characters; no route's is over 15), unless it is a file
# name (a browser's /apple-touch-icon-precomposed.png is 32).
_SECRET_SEGMENT = re.compile(
    rf"cbk_[^/]*|(?![^/]*\.[A-Za-z0-9]{{1,5}}(?:/|$))[^/]{{{MIN_SECRET_LENGTH},}}"
)
# A piece of a known token shorter than this (before a `?` early in it) is left in a path:
# it tells little, and cutting it out would cut ordinary words.
MIN_KNOWN_PIECE = 8
REOPEN_CHECK_S = 1.0  # how often a log file is checked for having been moved (rotated)


class _Ids:
    """Request ids: this process's random prefix and a counter (new after a fork).

    The pid, prefix and counter are one tuple, replaced whole: a forked child's first
    requests, on several threads at once, each see either the parent's state or a whole
    new one, never a pid without its prefix (two may make a state each: their prefixes
    differ, so the ids stay unique)."""

    def __init__(self) -> None:
        self._state: tuple[int, str, itertools.count] = (0, "", itertools.count(1))

    def new(self) -> str:
        state = self._state
        if state[0] != os.getpid():
            state = self._state = (os.getpid(), uuid.uuid4().hex[:10], itertools.count(1))
        return f"{state[1]}-{next(state[2]):x}"


new_request_id = _Ids().new


def request_id_of(environ: dict) -> str:
    """The request's id, chosen on first use: the client's if plain (CLIENT_ID), or a new one."""
    ident = environ.get(ENVIRON_ID)
    if ident is None:
        sent = environ.get("HTTP_X_REQUEST_ID")
        ident = sent if sent and CLIENT_ID.fullmatch(sent) else new_request_id()
        environ[ENVIRON_ID] = ident
    return ident


class _Known:
    """The admin tokens this process knows (the configured one, and any rotated in that
    it has since accepted), each as a logged path would hold it: an admin token may hold
    `/`, which splits it into segments too short for the length rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self.pieces: tuple[str, ...] = ()  # longest first, replaced whole

    def add(self, secret: str) -> None:
        if secret in self._secrets:
            return
        with self._lock:
            self._secrets |= {secret}
            pieces = set(self.pieces)
            # Whole, or up to its first `?` or `#` (the rest is a query, never logged, or
            # a fragment, never sent); its %XX as sent (a client may encode the `%`) or
            # decoded (as the server decodes a path).
            for kept in {secret, re.split(r"[?#]", secret, maxsplit=1)[0]}:
                for shown in (kept, urllib.parse.unquote_to_bytes(kept).decode("latin-1")):
                    if len(shown) >= MIN_KNOWN_PIECE:
                        pieces.add(shown)
            self.pieces = tuple(sorted(pieces, key=len, reverse=True))


_known = _Known()


def keep_out(secret: str) -> None:
    """Cut `secret`, an admin token, out of every path this process logs from now on,
    wherever it is and whatever it holds (its own `/` included)."""
    _known.add(secret)


def without_secrets(path: str) -> str:
    """`path` with what could be a secret cut out: an admin token this process knows
    (`keep_out`), a seller key's segment, and a segment long enough to be an admin token."""
    for piece in _known.pieces:
        if piece in path:
            path = path.replace(piece, "[redacted]")
    if "cbk_" in path or len(path) > MIN_SECRET_LENGTH:
        path = _SECRET_SEGMENT.sub(_redacted, path)
    return path


def _redacted(found: re.Match) -> str:
    return "cbk_[redacted]" if found[0].startswith("cbk_") else "[redacted]"


def escaped(text: str, limit: int = MAX_PATH) -> str:
    """`text` (WSGI's latin-1 str) with every byte outside plain visible ASCII as %XX, so
    a line cannot be split, forged or coloured; at most `limit`."""
    if len(text) <= limit and not _NEEDS_ESCAPE.search(text):
        return text  # the usual path: nothing to escape
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
    plain = "".join(map(_ESCAPES.__getitem__, raw))
    return plain if len(plain) <= limit else plain[:limit] + "..."


def who(principal: object) -> str:
    """The `seller` field: a seller's id, `admin`, or `-` (no one signed in)."""
    if principal is None:
        return "-"
    seller_id = getattr(principal, "seller_id", None)
    return str(seller_id) if seller_id is not None else "admin"


def line(
    *,
    ident: str,
    method: str,
    path: str,
    status: int | str,
    seconds: float,
    seller: str = "-",
    client: str = "-",
    moment: float | None = None,
    cut: bool = False,
) -> bytes:
    """One access log line (logfmt, fields always in this order), newline included; a
    streamed answer that was `cut` short ends with `cut=1`."""
    moment = time.time() if moment is None else moment
    return (
        f"time={_stamp(moment)} id={ident} method={escaped(method, 16)} "
        f"path={escaped(without_secrets(path))} status={status} duration_ms={seconds * 1000:.2f} "
        f"seller={seller} client={escaped(client, 64)} pid={os.getpid()}"
        f"{' cut=1' if cut else ''}\n"
    ).encode("ascii")


# The last second formatted, and its text: one strftime a second. One tuple, read once: a
# list read twice could pair this second with the text another thread had just put there.
_second = (-1, "")


def _stamp(moment: float) -> str:
    global _second
    whole = int(moment)
    second, text = _second
    if second != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int(moment * 1000) % 1000:03d}Z"


class LogFile:
    """Where lines go: stderr, a file opened for appending, or nowhere (`off`).

    A file is reopened when it has been moved away (logrotate's default), checked at
    most once a second; `copytruncate` works too, since every write appends.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.enabled = target != OFF
        self._fd: int | None = None
        self._checked = 0.0
        self.dropped = 0  # lines not written since the last one that was
        if self.enabled and target != STDERR:
            self._fd = self._open()  # a path that cannot be opened is refused at start

    def _open(self) -> int:
        """The file, appended to; one made here is 0640 whatever the umask (the systemd
        unit's 0077 made it 0600: a log shipper in the service's group could not read it)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            try:
                fd = os.open(self.target, flags | os.O_EXCL, 0o640)
            except FileExistsError:
                return os.open(self.target, flags, 0o640)
            os.fchmod(fd, 0o640)
            return fd
        except OSError as exc:
            raise ValueError(f"--access-log {self.target}: {exc.strerror}") from None

    def write(self, data: bytes) -> None:
        if not self.enabled:
            return
        self.follow()
        try:
            os.write(2 if self._fd is None else self._fd, data)
        except OSError as exc:  # a full disk or a closed stderr must not fail the request
            self.dropped += 1
            if self.dropped == 1:  # said once while it lasts, and once it ends
                _log.warning("the access log (%s) cannot be written: %s; its lines are"
                             " dropped until it can", self.target, exc.strerror)  # fmt: skip
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            _log.warning("the access log (%s) is written again; %d line(s) were dropped",
                         self.target, dropped)  # fmt: skip

    def follow(self) -> None:
        """Open the file afresh if it was moved away, checked at most once a second: at
        each write, and by a holder that never writes (the supervisor of `--processes`,
        whose copy its replacement children inherit), which would keep a rotated file's
        space in use for good."""
        if self._fd is None:
            return
        now = time.monotonic()
        if now - self._checked >= REOPEN_CHECK_S:
            self._checked = now
            self._reopen_if_moved()

    def _reopen_if_moved(self) -> None:
        try:
            current = os.stat(self.target)
            moved = (current.st_dev, current.st_ino) != _identity(os.fstat(self._fd))
        except OSError:
            moved = True
        if moved:
            try:
                fresh = self._open()
            except ValueError:
                return  # keep writing where we were
            os.close(self._fd)
            self._fd = fresh


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


Observer = Callable[[dict, str, int, float], None]


class AccessLog:
    """WSGI middleware: the request id, `X-Request-Id`, the access log line, and `observe`
    (environ, method, status, seconds) for the metrics, once per request."""

    def __init__(self, app, log: LogFile, observe: Observer | None = None) -> None:
        self.app = app
        self.log = log
        self.observe = observe

    def __call__(self, environ: dict, start_response):
        began = time.perf_counter()
        ident = request_id_of(environ)
        answered: list[str] = []

        def start(status: str, headers: list, exc_info=None):
            answered.append(status)
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers.append(("X-Request-Id", ident))
            return start_response(status, headers, exc_info)

        result = self.app(environ, start)
        status = int(answered[-1][:3]) if answered else 500

        def ended(cut: bool = False) -> None:
            seconds = time.perf_counter() - began
            method = environ.get("REQUEST_METHOD", "-")
            if self.log.enabled:
                self.log.write(
                    line(
                        ident=ident,
                        method=method,
                        path=environ.get("PATH_INFO", ""),
                        status=status,
                        seconds=seconds,
                        seller=who(environ.get(ENVIRON_WHO)),
                        client=environ.get("REMOTE_ADDR", "-"),
                        cut=cut,
                    )
                )
            if self.observe is not None:
                self.observe(environ, method, status, seconds)

        if isinstance(result, list):  # the whole answer: bottle's for every body but a stream
            ended()
            return result
        return _Streamed(result, ended)


class _Streamed:
    """A streamed answer (a statement), logged as it ends: when the server closes it, sent
    whole or not (the client went away, or a later chunk failed: `cut`)."""

    def __init__(self, body, ended: Callable[[bool], None]) -> None:
        self._body, self._ended, self._whole = body, ended, False

    def __iter__(self):
        yield from self._body
        self._whole = True

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            ended, self._ended = self._ended, None
            if ended is not None:
                ended(not self._whole)
