"""What a trusted reverse proxy says about the client, and nothing anyone else says.

Behind a proxy that ends TLS (README, "Facing the internet"), every request
arrives over plain http from the proxy's address, so the session cookies would
lose `Secure` and the access log would name the proxy as every client. With
`--trusted-proxy ADDRESS`, a request whose peer is that address is taken at the
proxy's word: `X-Forwarded-Proto: https` makes the request https (`Secure`
cookies), and the last hop of `X-Forwarded-For` (the one the proxy added) is
the client the log names. A value that is not `http`/`https` or not a plain IP
address (an IPv6 zone is text of any length) is ignored: the request is served
as it arrived, never refused, since a client can put anything before the
proxy's own hop.

Every forwarding header is then removed, trusted or not, so nothing later (bottle
reads `X-Forwarded-Host` and `-Proto` for its URLs) can be steered by a client.
Without the option waitress removes them itself (connections.py).
"""

from __future__ import annotations

import contextlib
import ipaddress

FORWARDING = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY", "HTTP_FORWARDED")  # fmt: skip


def forwarded(environ: dict, proxy: str) -> None:
    """Take the scheme and client from the proxy's headers, if `proxy` sent the request;
    then remove every forwarding header."""
    peer = environ.get("REMOTE_ADDR", "")
    if peer == proxy or peer.removeprefix("::ffff:") == proxy:  # an IPv4 peer of a v6 socket
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").strip().lower()
        if scheme in ("http", "https"):
            environ["wsgi.url_scheme"] = scheme
        client = environ.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        with contextlib.suppress(ValueError):  # none, or no address: the proxy stays the client
            address = ipaddress.ip_address(client)
            if getattr(address, "scope_id", None) is None:  # not fe80::1%<any text>
                environ["REMOTE_ADDR"] = str(address)
    for name in FORWARDING:
        environ.pop(name, None)


class TrustedProxy:
    """WSGI middleware: `forwarded(environ, proxy)` before the app."""

    def __init__(self, app, proxy: str) -> None:
        self.app = app
        self.proxy = proxy

    def __call__(self, environ: dict, start_response):
        forwarded(environ, self.proxy)
        return self.app(environ, start_response)
