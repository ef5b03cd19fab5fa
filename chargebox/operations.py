"""The operator's commands beside serving: `backup`, `anchors` and `audit`, with its progress.

cli.py owns start-up and the commands that make or serve a database; what an operator
runs against a database that is already there lives in its own modules (backup.py,
restore.py), and is registered and dispatched from here, so that cli.py stays small.
"""

from __future__ import annotations

import json
import sys
import time

from chargebox import backup, restore
from chargebox.commands import audit_verdict, opened_as_it_lies
from chargebox.config import Config

COMMANDS = ("backup", "anchors")


def add_commands(command) -> None:
    """`command(name, help)` makes a subcommand with --db and --data-dir (cli.py's)."""
    backup.arguments(command("backup", "copy the database, consistent, while it serves"))
    restore.arguments(command("anchors", "rollback detection: check, or accept a restore"))


def run(config: Config, args) -> int:
    if args.command == "backup":
        return backup.main(config, args.dest, args.force, args.vacuum, args.keep)
    return restore.main(config, args.action)


def audit(config: Config, as_json: bool, full: bool) -> int:
    """`chargebox audit`: the report (JSON with --json) and its verdict (audit_verdict)."""
    if not config.db_url and not config.db_path.exists():
        print(f"chargebox audit: no database at {config.db_path}", file=sys.stderr)
        return 2
    service = opened_as_it_lies(config)
    anchored = config.anchors_path.exists()  # before the audit: a clean one makes the file
    try:
        report = service.audit(full=full, progress=Progress())
    finally:
        service.close()
    print(f"audit: {report['scope']['summary']}", file=sys.stderr)
    if not anchored:  # nothing said of what it could not compare (helper-130)
        print(f"audit: no anchors file at {config.anchors_path} when it began: a rollback, or a "
              "revocation undone, could not be seen (a backup's copy has none; a live "
              "database's has one its servers write: keep it in place when restoring; a "
              "clean audit makes a new one: put the old one back over it before "
              "`anchors accept-restore`)", file=sys.stderr)  # fmt: skip
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    return audit_verdict(report)


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
