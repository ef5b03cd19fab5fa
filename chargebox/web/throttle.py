"""The sign-in form's throttle: failed sign-ins counted per client address, in this process.

After FAILURES wrong keys from one address within WINDOW_S seconds of the first of them,
that address's sign-ins are refused (429, Retry-After) without their token being checked,
until the window ends; a success resets nothing (a seller's own key would buy more guesses
at the admin token). Defence in depth: generated keys and tokens are 256-bit. Per process,
in memory, and bounded: at most ADDRESSES addresses, the one whose last failure is oldest
forgotten first (a client with that many addresses can make it forget one). An IPv6 client
counts by its /64. Pure: the page passes the address, REMOTE_ADDR as proxy.py leaves it.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable

FAILURES = 10
WINDOW_S = 600.0
ADDRESSES = 10_000
log = logging.getLogger("chargebox.auth")


def client_of(address: str) -> str:
    """What an address is counted as: an IPv4 address (also written IPv4-mapped), an IPv6
    address's /64, or the text itself (at most 64 characters) if it is no address."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class SignInThrottle:
    """Failed sign-ins per client: each one's first failure of its window and its count."""

    def __init__(
        self,
        failures: int = FAILURES,
        window_s: float = WINDOW_S,
        addresses: int = ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.window_s, self.addresses, self._clock = (
            failures, window_s, addresses, clock)  # fmt: skip
        self._lock = threading.Lock()
        # client -> (its window's first failure, failures since); the oldest failure first
        self._failed: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def wait(self, address: str) -> int:
        """Whole seconds until `address` may try to sign in again; 0: it may now."""
        client, now = client_of(address), self._clock()
        with self._lock:
            first, count = self._failed.get(client, (now, 0))
            left = first + self.window_s - now
            if left <= 0:
                self._failed.pop(client, None)  # its window is over: forgotten
                return 0
            return math.ceil(left) if count >= self.failures else 0

    def failed(self, address: str) -> None:
        """Count a wrong key from `address`; the one that closes its sign-ins is logged
        (a warning: behind a proxy not named with --trusted-proxy, every visitor shares
        one address, and one person's wrong keys close the sign-in page to all)."""
        client, now = client_of(address), self._clock()
        with self._lock:
            first, count = self._failed.pop(client, (now, 0))
            if now - first >= self.window_s:
                first, count = now, 0
            self._failed[client] = (first, count + 1)
            while len(self._failed) > self.addresses:
                self._failed.popitem(last=False)
        if count + 1 == self.failures:
            log.warning("sign-ins from %s refused for up to %d s: %d wrong keys", client,
                        math.ceil(first + self.window_s - now), self.failures)  # fmt: skip

    def __len__(self) -> int:
        return len(self._failed)
