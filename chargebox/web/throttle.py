"""The sign-in form's throttle: failed sign-ins counted per client address, in this process.

After FAILURES wrong keys from one address within WINDOW_S seconds of the first of them,
that address's sign-ins are refused (429, Retry-After) without their token being checked,
until the window ends (sign-ins being checked count among them: sent at once, no more
are checked); a success resets nothing (a seller's own key would buy more guesses
at the admin token). Defence in depth: generated keys and tokens are 256-bit. Per process,
in memory, and bounded: at most ADDRESSES addresses, the one whose last failure is oldest
forgotten first (a client with that many addresses can make it forget one). An IPv6 client
counts by its /64. Pure: the page passes the address, REMOTE_ADDR as proxy.py leaves it.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

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
        self._trying: collections.Counter[str] = collections.Counter()  # checked now, per client

    def wait(self, address: str) -> int:
        """Whole seconds until `address` may try to sign in again; 0: it may now."""
        with self._lock:
            return self._wait(client_of(address))[0]

    def _wait(self, client: str) -> tuple[int, int]:
        """`wait`'s answer, and the client's failures in its window; the lock held."""
        now = self._clock()
        first, count = self._failed.get(client, (now, 0))
        left = first + self.window_s - now
        if left <= 0:
            self._failed.pop(client, None)  # its window is over: forgotten
            return 0, 0
        return (math.ceil(left) if count >= self.failures else 0), count

    @contextlib.contextmanager
    def attempt(self, address: str) -> Iterator[tuple[int, bool]]:
        """`wait`'s answer for a sign-in about to be checked, and whether it waits only for
        the ones being checked (`at_once`). When 0, the attempt counts among the address's
        failures until the block ends (`failed`, in it, counts it for good): sign-ins sent
        at once all passed `wait` before any of them had failed, 15 of 40 checked, not 10
        (helper-109). One past them waits a second, told so (none of them may fail)."""
        client = client_of(address)
        with self._lock:
            wait, count = self._wait(client)
            at_once = not wait and count + self._trying[client] >= self.failures
            if at_once:
                wait = 1
            if not wait:
                self._trying[client] += 1
        try:
            yield wait, at_once
        finally:
            if not wait:
                with self._lock:
                    self._trying[client] -= 1
                    if not self._trying[client]:
                        del self._trying[client]

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
