"""HTTP requests as waitress reads them, refused when they are ambiguous; no business rules.

waitress's parser, made to refuse what one reader could take one way and another
reader (a proxy in front) another: a repeated header that decides who acts or
which write is meant, one spelt with `_` (waitress would drop it), a body framed
both by Content-Length and by Transfer-Encoding, header lines ended by a bare LF,
a header line folded onto the next, a path that is not UTF-8 (bottle would route
`/adm%FFin` as `/admin`, past a proxy's rule for `/admin`).
And waitress's own refusals (400, 413, 431, 501), answered in our JSON error shape;
and a HEAD's answer framed without a body (waitress chunked one it could not size);
and a sized answer's head and body sent together, in one system call rather than two.
connections.py serves with all three.
"""

from __future__ import annotations

from waitress.parser import HTTPRequestParser, ParsingError
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import BadRequest, RequestEntityTooLarge

from chargebox import access_log
from chargebox.statements import CLIENT
from chargebox.text import header_spelt, reads_as_a_key
from chargebox.web.errors import SECURITY_HEADERS, json_body

# Headers that decide who acts, what is sent or which write is meant: sent twice, waitress
# would join them with ", " (one order, two keys), so a repeat is refused instead.
SINGLE_HEADERS = (
    "AUTHORIZATION",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "HOST",
    "IDEMPOTENCY_KEY",
    "TRANSFER_ENCODING",
)
# waitress's own refusals, before the app sees the request: status -> (code, message).
WAITRESS_ERRORS = {
    400: ("bad_request", "the HTTP request is malformed: {detail}"),
    413: ("payload_too_large", "the request body is too large"),
    431: ("headers_too_large", "the request line and headers are too large"),
    501: ("unsupported_transfer_encoding", "only Transfer-Encoding: chunked is supported"),
}


class RepeatedHeader(ParsingError):
    """A header of SINGLE_HEADERS appears more than once, or is spelt with `_`."""


# Each single header as it may start a line of the lowered header block: spelt with
# '-' (counted: twice is a repeat) and with '_' (refused: waitress would drop it).
_SINGLE_SPELLINGS = tuple(
    (name, b"\r\n" + name.lower().replace("_", "-").encode() + b":",
     b"\r\n" + name.lower().encode() + b":")
    for name in SINGLE_HEADERS
)  # fmt: skip


_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_NOT_ASCII = ("the request target may hold ASCII only: percent-encode the rest as UTF-8 (curl -G"
              " --data-urlencode)")  # fmt: skip


class Parser(HTTPRequestParser):
    def received(self, data: bytes) -> int:
        """waitress's, but a request whose headers end with bare LFs is refused (400) as
        they end: waitress looks only for CRLF CRLF, and would wait for the request
        timeout without a word; and so is a chunked body with trailer fields."""
        if self.body_rcv is None and not self.completed:
            head = (self.header_plus + data).lstrip()  # blank lines before it: waitress's
            ended = b"\n\n" in head or b"\n\r\n" in head
            if ended and b"\r\n\r\n" not in head:
                self._first_line(head)
                self.error = BadRequest("lines must end with CRLF, not a bare LF")
                self.completed = True
                return len(data)
        taken = super().received(data)
        if (self.completed and self.error is None and self.chunked
                and self.body_rcv.trailer.strip(b"\r\n")):  # fmt: skip
            # waitress reads a chunked body's trailer and drops it: an Idempotency-Key
            # there would be lost (the write run unkeyed, a retry written again). (A "\r"
            # is left there when the last "\r\n" came in two reads: no trailer.)
            self.error = BadRequest("a chunked body's trailer fields are not read: send"
                                    " them as headers")  # fmt: skip
        elif not self.completed and self.chunked and self.body_rcv is not None:
            # A chunk announced past the limit is refused as it is announced, as a
            # Content-Length past it is: waitress counts only the bytes that came, and
            # would wait for the request timeout for a chunk that never comes.
            announced = self.body_bytes_received + self.body_rcv.chunk_remainder
            if announced >= self.adj.max_request_body_size:
                self.error = RequestEntityTooLarge("a chunk announced past the body limit")
                self.completed = True
        return taken

    def _first_line(self, head: bytes) -> None:
        """The request line, for the error task and the log line of a refused request."""
        try:
            self.parse_header(head.partition(b"\n")[0].rstrip(b"\r") + b"\r\n")
        except Exception:  # itself malformed: logged as waitress logs one it cannot read
            self.parse_header(b"GET / HTTP/1.0\r\n")

    def parse_header(self, header_plus: bytes) -> None:
        """waitress's parse; then each single header is looked for at the start of a
        line: a few byte searches, not a second parse of every line. A body framed twice
        (Content-Length and Transfer-Encoding, or chunked twice) is refused: a proxy in
        front may read the other framing, and take what follows for a second request
        (smuggling). So is a folded line (one that starts with a space or a tab, obs-fold):
        waitress would join it to the line before, as RFC 9112 allows, where a proxy may
        read it as a header of its own (RFC 9112 lets a server refuse it instead). So is a
        request line without its version."""
        try:  # first: a refusal is logged with its method and path
            super().parse_header(header_plus)
        except ParsingError as exc:
            if exc.args != ("Bad URI",):
                raise
            raise ParsingError(_NOT_ASCII) from None
        if not header_plus.partition(b"\r\n")[0].isascii():  # `//...`: waitress splits it unread
            raise ParsingError(_NOT_ASCII)
        if not self.version:  # waitress would run it as HTTP/1.0 (HTTP/0.9 has no headers)
            raise ParsingError("the request line must end with its version (HTTP/1.1)")
        try:  # bottle would drop the bytes that are not UTF-8: /adm%FFin would be /admin
            self.path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise ParsingError("the path is not UTF-8") from None
        sent = b"\r\n" + header_plus.partition(b"\r\n")[2]
        if b"\r\n " in sent or b"\r\n\t" in sent:
            raise ParsingError("a header line may not be folded onto the next (obs-fold)")
        block = sent.lower()
        if b"\r\ncontent-length:" in block and b"\r\ntransfer-encoding:" in block:
            raise ParsingError("a request may not have both Content-Length and Transfer-Encoding")
        if _codings(block) > 1:  # waitress refused any but chunked (501): chunked twice
            raise ParsingError("chunked may be applied to a body only once")  # RFC 9112 7
        if block.count(b"\r\ncookie:") > 1:
            self.headers["COOKIE"] = _cookies(sent)
        for name, dashed, underscored in _SINGLE_SPELLINGS:
            if underscored != dashed and underscored in block:
                # waitress drops a name with `_`: the request would run without it.
                at = block.index(underscored)
                spelled = sent[at + 2 : at + len(underscored) - 1].decode("latin-1")
                raise _underscored(spelled)
            if block.count(dashed) > 1:
                raise RepeatedHeader(f"the {header_spelt(name)} header is repeated")
        if b"_" in block and b"idempoten" in block:  # X_Idempotency_Key, Idempotence_Key
            for line in sent.split(b"\r\n")[1:]:
                spelled = line.partition(b":")[0].decode("latin-1")
                if "_" in spelled and reads_as_a_key(spelled):
                    raise _underscored(spelled)


def _underscored(spelled: str) -> RepeatedHeader:
    return RepeatedHeader(f"the {spelled} header must be spelt with '-', not '_'")


def _cookies(sent: bytes) -> str:
    """The Cookie headers of a header block, joined with "; " as one header's pairs are
    (RFC 9113 8.2.3: what an HTTP/2 proxy does): waitress joins a repeated header with
    ", ", and a cookie at the seam read as `S, pref=x`, no session (a sign-out). A single
    header's value is as it was sent: splitting at commas too would let a sibling's cookie
    whose value holds `, name=` plant that name."""
    values = (line[7:].strip(b" \t") for line in sent.split(b"\r\n")
              if line[:7].lower() == b"cookie:")  # fmt: skip
    return "; ".join(value.decode("latin-1") for value in values)


def _codings(block: bytes) -> int:
    """How many transfer codings the lowered header block's Transfer-Encoding lists (no
    line of it is folded: refused before; the header appears once at most)."""
    at = block.find(_TRANSFER_ENCODING)
    if at < 0:
        return 0
    value = block[at + len(_TRANSFER_ENCODING) :].partition(b"\r\n")[0]
    return sum(1 for coding in value.split(b",") if coding.strip(b" \t"))


# Answers up to this size go in one write (an API answer is well under 4 KB); a larger
# one as waitress writes it: no copy of a big body, and never a file buffer (1 MB up).
ONE_SEND_MAX = 64 * 1024


class _OneSend:
    """A sized answer's head and body go to the channel as one write, so one send:
    waitress writes them one after the other, and its channel sends each at once (its
    `send_bytes` is 1), two system calls an answer, each letting go of the interpreter
    lock and winning it back among the request threads (docs/performance.md). The bytes
    are the same; a streamed answer (no Content-Length, framed as chunked), a head with no
    body, a body larger than its Content-Length and one over ONE_SEND_MAX go waitress's
    way."""

    def write(self, data: bytes) -> None:
        if self.wrote_header or not data or not self.complete:
            return super().write(data)
        head = self.build_response_header()
        sized = self.content_length is not None and len(data) <= self.content_length
        if sized and len(head) + len(data) <= ONE_SEND_MAX and self.has_body \
                and not self.chunked_response:  # fmt: skip
            whole = head + data
            # As waitress: the head counts as written once it is handed over, so a buffer
            # that fails after taking it closes the connection rather than answer twice.
            self.wrote_header = True
            self.content_bytes_written += len(data)
            self.channel.write_soon(whole)
            return None
        self.channel.write_soon(head)
        self.wrote_header = True
        return super().write(data)


class Task(_OneSend, WSGITask):
    def get_environment(self) -> dict:
        """waitress's, and the connection, for an answer made as its client reads it."""
        environ = super().get_environment()
        environ[CLIENT] = self.channel
        return environ

    def build_response_header(self) -> bytes:
        """waitress's, but the answer to a HEAD whose GET streams (no Content-Length, as a
        statement) is not framed as chunked: waitress sent `Transfer-Encoding: chunked`
        and then a last chunk, bytes after an answer that has no body. The connection is
        still closed after it (waitress does not know where a body it cannot size ends)."""
        head = super().build_response_header()
        if self.chunked_response and self.request.command == "HEAD":
            self.chunked_response = False
            head = head.replace(b"\r\nTransfer-Encoding: chunked\r\n", b"\r\n", 1)
        return head


class JsonErrorTask(_OneSend, ErrorTask):
    """waitress's own errors (a broken request, a body over its limit) in our JSON shape."""

    def execute(self) -> None:
        error = self.request.error
        code, message = WAITRESS_ERRORS.get(error.code, ("internal_error", "server error"))
        # waitress quotes what it could not read ('Malformed header line "Authorization:
        # Bearer ..."'): never sent back, where a client's or a gateway's log would keep it
        detail = str(error.body).partition('"')[0].rstrip(" .")
        body = json_body({"error": {"code": code, "message": message.format(detail=detail)}})
        self.status = f"{error.code} {error.reason}"
        ident = access_log.new_request_id()  # the request's own header was not understood
        self.response_headers.append(("Content-Type", "application/json; charset=utf-8"))
        self.response_headers.append(("X-Request-Id", ident))
        self.response_headers.extend(SECURITY_HEADERS.items())
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        self.channel.server.refused(self.channel, self.request, error.code, ident)
