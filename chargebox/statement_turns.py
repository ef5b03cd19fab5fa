"""Statements' turns: how many a server process makes at once, which wait, which wait for
their clients; no database here.

A statement holds the interpreter lock ~6 us an entry (half a second for a busy seller's
year), and one seller's hundred at once stalled every other seller's sales for a minute:
a process makes AT_ONCE at once, one a seller, the next in the order asked. A statement
whose client has not taken what it was sent lends its turn meanwhile (statements.Rendered),
and takes it back before any asked since. Every wait holds a request thread, so each kind
is bounded: past them, a 503 (retry), or a statement written ahead into waitress's buffers
as before.
"""

from __future__ import annotations

import collections
import threading
import time

from chargebox.errors import NoTurn

# At most one a seller is made (but for a lent one taking its turn back while its seller's
# next is made: two). A statement waiting for its client (statements.UNSENT) is not
# buffered whole (waitress buffers up to 64 MB a connection, on disk past 1 MB: forty
# slow downloads held 265 MB) and keeps no other statement waiting. A quarter of a
# server's threads at most wait for a turn (WAITING at most, WAIT seconds at most), as
# many for their clients, LENT_EACH of a seller, with one thread always left for the
# rest (`for_threads`).
AT_ONCE = 2
WAITING = 8
WAIT = 5.0
LENT_EACH = 2


class Turns:
    """Which statements a process is making now, which wait their turn, and which have lent
    it while their clients read: at most `at_once` made at once, one a seller, the next in
    the order asked; `waiting` at most wait (one more is refused, and so is one that waited
    `wait` seconds: 503, retry), in turn, so that two sellers asking again and again cannot
    keep a third out. A statement lends its turn if fewer than `lending` have (LENT_EACH a
    seller), and takes it back before any asked since; a seller with LENT_EACH lent (or
    taking their turns back) is refused one more."""

    def __init__(self, at_once: int = AT_ONCE, waiting: int = WAITING, wait: float = WAIT,
                 lending: int = WAITING) -> None:  # fmt: skip
        self.at_once, self.waiting, self.wait, self.lending = at_once, waiting, wait, lending
        self._turn = threading.Condition()
        self._making: set[Turn] = set()
        self._lent: set[Turn] = set()
        self._queue: collections.deque[Turn] = collections.deque()
        self._returning = 0  # the queue's first, taking their lent turns back

    def take(self, seller_id: int) -> Turn:
        """A turn for a statement of `seller_id` (waited for), or Unavailable; call what it
        returns when the statement is closed."""
        with self._turn:
            queued = [turn.seller_id for turn in self._queue]
            returning, asking = queued[: self._returning], queued[self._returning :]
            if seller_id in asking or any(turn.seller_id == seller_id for turn in self._making):
                raise NoTurn("a statement of this seller is being made already: ask for "
                             "one at a time, and retry when it is done")  # fmt: skip
            if self._downloads(seller_id) + returning.count(seller_id) >= LENT_EACH:
                raise NoTurn("two statements of this seller are being downloaded: retry "
                             "when one of them is done")  # fmt: skip
            waits = self._queue or len(self._making) >= self.at_once
            if waits and len(asking) >= self.waiting:  # (a free turn is given at once)
                raise NoTurn("too many statements are being made; retry shortly")
            turn = Turn(self, seller_id)
            self._queue.append(turn)
            self._first(turn, time.monotonic() + self.wait)
        return turn

    def queued(self) -> int:
        """How many wait for a turn now."""
        with self._turn:
            return len(self._queue)

    def lent(self) -> int:
        """How many have lent their turns now."""
        with self._turn:
            return len(self._lent)

    def _downloads(self, seller_id: int) -> int:
        """How many of the seller's statements have lent their turns (holding `_turn`)."""
        return sum(turn.seller_id == seller_id for turn in self._lent)

    def _lend(self, turn: Turn) -> bool:
        with self._turn:
            if len(self._lent) >= self.lending or self._downloads(turn.seller_id) >= LENT_EACH:
                return False
            if turn not in self._making:  # given back already
                return False
            self._making.remove(turn)
            self._lent.add(turn)
            self._turn.notify_all()
            return True

    def _take_back(self, turn: Turn) -> None:
        with self._turn:
            self._lent.remove(turn)
            self._queue.insert(self._returning, turn)
            self._returning += 1
            try:
                self._first(turn, None)
            finally:
                self._returning -= 1

    def _first(self, turn: Turn, deadline: float | None) -> None:
        """Wait (holding `_turn`) until `turn`, queued, is first and a turn is free."""
        try:
            while self._queue[0] is not turn or len(self._making) >= self.at_once:
                left = None if deadline is None else deadline - time.monotonic()
                if not self._turn.wait(left):
                    raise NoTurn("too many statements are being made; retry shortly")
        finally:
            self._queue.remove(turn)
            self._turn.notify_all()  # the next in the queue may be first now
        self._making.add(turn)

    def _give_back(self, turn: Turn) -> None:
        with self._turn:
            self._making.discard(turn)
            self._lent.discard(turn)
            self._turn.notify_all()


def for_threads(threads: int) -> Turns:
    """A server's turns, of `threads` request threads: a quarter at most wait for a turn, as
    many for their clients, and statements never hold the last thread (with 4: none may
    wait for its client, helper-98; with 2 or 3, one is made at once)."""
    at_once, waiting = max(1, min(AT_ONCE, threads - 2)), min(WAITING, threads // 4)
    lending = max(0, min(threads // 4, threads - at_once - waiting - 1))
    return Turns(at_once=at_once, waiting=waiting, lending=lending)


class Turn:
    """One statement's turn (Turns.take): called when the statement is closed, to give it
    back; lent while its client reads."""

    def __init__(self, turns: Turns, seller_id: int) -> None:
        self._turns, self.seller_id = turns, seller_id

    def __call__(self) -> None:
        self._turns._give_back(self)

    def lend(self) -> bool:
        """Lend the turn while the statement waits for its client; False if no more may."""
        return self._turns._lend(self)

    def take_back(self) -> None:
        """The turn lent, back: waited for, as long as it takes (it was given once), before
        any statement that asked since."""
        self._turns._take_back(self)
