"""When each seller key was last used: stamped off the request's path, at most once a
minute per key, by a short-lived thread of the process that saw the use (`LastUse`).
A request never waits for the stamp, and a failed write is logged and forgotten.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading

from chargebox.clock import now
from chargebox.db import Database

log = logging.getLogger("chargebox.auth")

# A key's last use is written at most this often (per key, across every process): a
# write per request would put every read behind the write lock.
LAST_USED_GRANULARITY = datetime.timedelta(minutes=1)
# A last use stamped further ahead than this was stamped by a clock that jumped (and was
# set back since): it is stamped afresh. Hosts a few minutes apart leave each other's be.
LAST_USED_AHEAD = datetime.timedelta(days=1)
_USED = (
    "UPDATE seller_key SET last_used_at = ? WHERE id = ? AND revoked_at IS NULL"
    " AND (last_used_at IS NULL OR last_used_at < ? OR last_used_at > ?)"
)


class LastUse:
    """Records when keys were used, off the request's path: a key whose `last_used_at` is
    older than LAST_USED_GRANULARITY is written by a short-lived thread of this process,
    once, and closes the connection it opened; a request never waits for it, and a failed
    write is logged and forgotten."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.pid = os.getpid()
        self.due: dict[int, str] = {}
        self.lock = threading.Lock()
        self.writing = False

    def saw(self, key_id: int, last_used_at: str | None) -> str:
        """A stamp from the last minute stands; one more than LAST_USED_AHEAD ahead is
        written afresh rather than shown as a use to come until the clock passes it.
        Returns the stamp that stands (the new one, once one is to be written)."""
        recent = now(-LAST_USED_GRANULARITY), now(LAST_USED_AHEAD)
        if last_used_at is not None and recent[0] <= last_used_at <= recent[1]:
            return last_used_at
        with self.lock:
            if key_id in self.due:
                return self.due[key_id]
            stamp = self.due[key_id] = now()
            if self.writing:
                return stamp
            self.writing = True
        threading.Thread(target=self._write, name="chargebox-last-use", daemon=True).start()
        return stamp

    def _write(self) -> None:
        while True:
            with self.lock:
                if not self.due:
                    self.writing = False
                    with contextlib.suppress(Exception):
                        self.database.release()  # this thread's connection ends with it
                    return
                key_id, at = self.due.popitem()
            params = (at, key_id, now(-LAST_USED_GRANULARITY), now(LAST_USED_AHEAD))
            try:
                self.database.write(lambda write, params=params: write.execute(_USED, params))
            except Exception as exc:  # the request was answered: a missed stamp costs nothing
                log.warning("could not record a key's last use: %s", type(exc).__name__)


def last_use(database: Database) -> LastUse:
    """The database's LastUse in this process (a forked child makes its own). Two threads
    that make one at once cost at most one more write of a stamp."""
    found = getattr(database, "last_use", None)
    if found is None or found.pid != os.getpid():
        found = database.last_use = LastUse(database)
    return found
