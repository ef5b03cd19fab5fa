"""The operator's commands beside serving: `backup` and `anchors`, and an audit's progress.

cli.py owns start-up and the commands that make or serve a database; what an operator
runs against a database that is already there lives in its own modules (backup.py,
restore.py), and is registered and dispatched from here, so that cli.py stays small.
"""

from __future__ import annotations

import sys
import time

from chargebox import backup, restore
from chargebox.config import Config

COMMANDS = ("backup", "anchors")


def add_commands(command) -> None:
    """`command(name, help)` makes a subcommand with --db and --data-dir (cli.py's)."""
    backup.arguments(command("backup", "copy the database, consistent, while it serves"))
    restore.arguments(command("anchors", "rollback detection: check, or accept a restore"))


def run(config: Config, args) -> int:
    if args.command == "backup":
        return backup.main(config, args.dest, args.force, args.vacuum)
    return restore.main(config, args.action)


class Progress:
    """An audit's progress on stderr, at most once a second, once it has run a second."""

    def __init__(self) -> None:
        self.began = self.said = time.monotonic()

    def __call__(self, what: str, done: int, of: int) -> None:
        moment = time.monotonic()
        if moment - self.said >= 1:
            self.said = moment
            share = f" ({100 * done // of}%)" if of else ""
            print(f"audit: {what} {done:,} of {of:,}{share}, {moment - self.began:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
