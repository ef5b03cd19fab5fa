"""`chargebox backup DEST`: a consistent copy of a database, made while it serves.

SQLite: the online backup API copies every page in one step, inside one read
transaction of the source: one consistent moment, and never the write lock (in WAL
mode a reader does not block writers, so sales go on). `VACUUM INTO` is the other
way (`--vacuum`: a compacted copy, slower). The copy is written to a temporary file
beside DEST (in a locked directory, which the next backup removes if one was killed:
partial.py),
checked (`quick_check`, its sealed heads against the ledger key), fsynced, and only
then given DEST's name: DEST is never half a copy, and an existing DEST is refused
unless `--force`; in a directory a name stamped with the second is made, never over
another (a taken one waits for the next second's: `_Naming`). PostgreSQL: pg_dump's
custom format, one snapshot.
Not in the copy, by design: the ledger key and the admin token (back them up apart).
The copy's sealed heads are anchored for the live database (anchors.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chargebox import anchors, keeping, partial, pg_driver, seals
from chargebox.clock import now
from chargebox.config import Config, whole_number, without_settings
from chargebox.location import check_database_path, synced

BUSY_TIMEOUT_MS = 10_000  # reading the source waits for a WAL recovery, never for writers
PG_DUMP_TIMEOUT = 24 * 3600
RESTAMPS = 3  # a stamped name taken: the next second's, so many times at most


@dataclasses.dataclass(frozen=True)
class Made:
    """What a backup wrote: the file, its size, how long it took, what it holds."""

    path: Path
    size: int
    seconds: float
    method: str
    sellers: int = 0
    entries: int = 0
    newest_entry: int = 0
    heads: tuple[tuple[int, int, int, str], ...] = ()  # (seller, entry, entries, entry seal)
    heads_verified: int | None = None  # of the newest heads checked with the key
    snapshot_seconds: float | None = None  # how long the source's read snapshot was held
    swept: tuple[Path, ...] = ()  # partial copies of killed backups, removed (partial.py)
    program: str = ""  # the pg_dump that made it (its pg_restore restores it)

    def summary(self) -> str:
        what = f"pg_dump's custom format ({self.program})"
        if self.method != "pg_dump":
            what = f"{self.sellers:,} sellers, {self.entries:,} ledger entries"
            what += f" (newest {self.newest_entry:,})"
        took = f"{self.seconds:.1f} s ({self.method}"
        if self.snapshot_seconds is not None:
            took += f"; the database's read snapshot held {self.snapshot_seconds:.1f} s"
        took += ")"
        return f"backed up to {self.path}: {self.size:,} bytes, {what}, {took}"


def destination(dest: Path, source_name: str) -> Path:
    """DEST itself, or inside an existing directory a new name stamped with the time."""
    if dest.is_dir():
        stamp = now().replace("-", "").replace(":", "").split(".")[0] + "Z"
        stem, dot, suffix = source_name.rpartition(".")
        return dest / (f"{stem}-{stamp}.{suffix}" if dot else f"{source_name}-{stamp}")
    return dest


class _Naming:
    """A backup's name: DEST, or in a directory a stamped name that is free. Two backups in
    one second (a daily and a weekly timer) would take one name: the later waits for the
    next second's (RESTAMPS at most), at the start or when the name appears meanwhile. A
    stamped name is never replaced, --force or not (`replace`: DEST a file and --force)."""

    def __init__(self, dest: Path, source_name: str, overwrite: bool) -> None:
        self.dest, self.source_name = dest, source_name
        self.stamped = dest.is_dir()
        self.replace = overwrite and not self.stamped
        self.target = destination(dest, source_name)
        self.left = RESTAMPS
        while self.stamped and self.target.exists() and self.restamp():
            pass

    def restamp(self) -> bool:
        """The next second's name, if a restamp is left (else False: the name stays)."""
        if not self.stamped or not self.left:
            return False
        self.left -= 1
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
        self.target = destination(self.dest, self.source_name)
        return True


def backup(config: Config, dest: Path, overwrite: bool = False, vacuum: bool = False,
           after_snapshot: Callable[[], object] = lambda: None) -> Made:  # fmt: skip
    """Copy the database `config` names to `dest` (see the module docstring); ValueError
    in one line for a refusal, before anything is written. `after_snapshot` runs once
    the source is let go, before the copy is checked."""
    if config.db_url:
        return _pg_dump(config.db_url, dest, overwrite)
    source = config.db_path
    if not source.is_file():
        raise ValueError(f"--db {source}: no database there to back up")
    check_database_path(source, writing=False)
    naming = _Naming(dest, source.name, overwrite)
    target = naming.target
    _check_target(naming)
    with contextlib.suppress(FileNotFoundError):
        if target.samefile(source):
            raise ValueError(f"{target}: is the database itself")
    swept = tuple(partial.sweep(target.parent))
    began = time.perf_counter()
    with _the_destinations(target.parent), partial.making(target) as (temporary, _lock):
        _copy(source, temporary, vacuum)
        copied = time.perf_counter() - began
        after_snapshot()
        facts = _checked(temporary, config.ledger_key)
        target = _place(temporary, naming)
    return Made(
        path=target,
        size=target.stat().st_size,
        seconds=time.perf_counter() - began,
        method="vacuum-into" if vacuum else "backup-api",
        snapshot_seconds=copied,
        swept=swept,
        **facts,
    )


def _check_target(naming: _Naming) -> None:
    target = naming.target
    if target.exists() and naming.stamped:
        raise ValueError(f"{target}: exists, as each later second's name did; retry")
    if target.exists() and not naming.replace:
        raise ValueError(f"{target}: exists; choose a new name, or --force to replace it")
    if target.exists() and not target.is_file():
        raise ValueError(f"{target}: is not a regular file")
    if not target.parent.is_dir():
        raise ValueError(f"{target}: its directory {target.parent} does not exist")


def _copy(source: Path, temporary: Path, vacuum: bool) -> None:
    """Every page of one read snapshot of `source` into `temporary` (made empty)."""
    reader = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        if vacuum:
            temporary.unlink()  # VACUUM INTO wants to make the file itself: owner-only
            mask = os.umask(0o077)  # from its first byte, as the backup API's copy is
            try:
                reader.execute("VACUUM INTO ?", (str(temporary),))
            finally:
                os.umask(mask)
            return
        reader.execute("PRAGMA query_only = 1")
        copy = sqlite3.connect(temporary, isolation_level=None)
        try:
            # pages=-1: all in one step, one read transaction. In steps, a write by another
            # connection between two steps restarts the copy: under load it may never end.
            reader.backup(copy, pages=-1)
        finally:
            copy.close()
    finally:
        reader.close()


def _checked(temporary: Path, ledger_key: str | None) -> dict:
    """The copy, opened on its own: a rollback-journal file again (no -wal beside it),
    SQLite's quick_check, and what it holds; ValueError if it is not sound."""
    conn = sqlite3.connect(temporary, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")  # a single file; serve sets WAL again
        (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise ValueError(f"the copy failed SQLite's quick_check ({verdict}); nothing kept")
        sellers = conn.execute("SELECT COUNT(*) FROM seller").fetchone()[0]
        entries, newest = conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM ledger_entry"
        ).fetchone()
        heads = tuple(
            conn.execute(
                "SELECT seller_id, entry_id, entries, entry_mac FROM seller_head ORDER BY seller_id"
            )
        )
        verified = None
        if ledger_key and heads:
            checked, verified = seals.key_check(seals.SqliteRows(conn), ledger_key.encode("utf-8"))
            if checked and not verified:
                raise ValueError(
                    f"the copy's sealed heads do not verify with the ledger key ({checked} tried)"
                )
    finally:
        conn.close()
    return {
        "sellers": sellers,
        "entries": entries,
        "newest_entry": newest,
        "heads": heads,
        "heads_verified": verified,
    }


@contextlib.contextmanager
def _the_destinations(directory: Path):
    """A copy that cannot be written (a disk full, no inodes left) is told
    in one line naming DEST's directory: SQLite's "database or disk is full" was said of
    the live database (`--db`), and an OSError was a traceback (helper-110)."""
    try:
        yield
    except OSError as exc:
        raise ValueError(f"{directory}: the copy could not be written there "
                         f"({exc.strerror or exc}); nothing kept") from None  # fmt: skip
    except sqlite3.Error as exc:  # the source is only read: a full disk is the copy's
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_FULL:
            raise
        raise ValueError(f"{directory}: the copy could not be written there ({exc}); "
                         "nothing kept") from None  # fmt: skip


def _place(temporary: Path, naming: _Naming) -> Path:
    """fsync the copy, give it its name (atomically; without --force never over a file
    that appeared meanwhile: a stamped name then takes the next second's), then fsync the
    directory so that the name survives too. The name given."""
    synced(temporary)
    os.chmod(temporary, 0o600)
    if naming.replace:
        os.replace(temporary, naming.target)
    else:
        while True:
            try:
                os.link(temporary, naming.target)
                break
            except FileExistsError:
                if not naming.restamp():
                    raise ValueError(f"{naming.target}: appeared during the backup; nothing "
                                     "replaced") from None  # fmt: skip
    synced(naming.target.parent)
    return naming.target


def _pg_dump(url: str, dest: Path, overwrite: bool) -> Made:
    """pg_dump --format=custom of the database, in one snapshot; the password goes to
    pg_dump through a private passfile, never on its command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    naming = _Naming(dest, "chargebox.dump", overwrite)
    target = naming.target
    _check_target(naming)
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    swept = tuple(partial.sweep(target.parent))
    began = time.perf_counter()
    with partial.making(target) as (temporary, lock), tempfile.TemporaryDirectory() as private:
        if password is not None:
            passfile = Path(private) / "pgpass"
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            passfile.write_text(f"*:*:*:*:{escaped}\n")
            passfile.chmod(0o600)
            params["passfile"] = str(passfile)
        program = pg_driver.pg_dump_for(make_conninfo(**params))
        result = subprocess.run(
            [
                program,
                "--format=custom",
                "--file",
                str(temporary),
                "--dbname",
                make_conninfo(**params),
            ],
            capture_output=True,
            text=True,
            timeout=PG_DUMP_TIMEOUT,
            pass_fds=(lock,),  # the copy's lock lives as long as pg_dump, killed or not
            env=without_settings(),
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            errors = [line for line in lines if "error:" in line] or lines[-1:]
            reason = errors[0] if errors else f"exit status {result.returncode}"
            refused = "permission denied" in reason or "privilege" in reason  # 15, 18
            hint = (" (back up with the schema owner's URL, as for init-db: the service's"
                    " own role may not read the sequences)")  # fmt: skip
            raise ValueError(f"pg_dump failed: {reason}{hint if refused else ''}")
        target = _place(temporary, naming)
    return Made(
        path=target,
        size=target.stat().st_size,
        seconds=time.perf_counter() - began,
        method="pg_dump",
        swept=swept,
        program=program,
    )


def arguments(parser) -> None:
    """`chargebox backup`'s own arguments (cli.py adds --db and --data-dir)."""
    parser.add_argument("dest", type=_dest, help="the new file (or an existing directory: a "
                        "name stamped with the time is made in it)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    parser.add_argument("--keep", type=whole_number(10_000), metavar="N",
                        help="DEST a directory: then delete this database's stamped backups "
                        "there but the newest N (by count, never by age)")  # fmt: skip
    parser.add_argument("--vacuum", action="store_true",
                        help="SQLite: VACUUM INTO (a compacted copy, slower) instead of the "
                        "backup API")  # fmt: skip


def _dest(text: str) -> Path:
    """DEST as typed: one that ends with / names a directory, which must exist (else a
    file of that name would be made, and every later `--keep` there refused)."""
    if text.endswith("/") and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return Path(text)


def main(config: Config, dest: Path, force: bool, vacuum: bool, keep: int | None = None) -> int:
    if keep is not None and not dest.exists():
        raise ValueError(f"{dest}: no such directory (--keep is for a directory DEST)")
    if keep is not None and not dest.is_dir():
        raise ValueError(f"--keep is for a directory DEST, where stamped names are made: {dest}")
    unreadable = False
    try:
        key = config.ledger_key_at_hand()
    except ValueError as exc:  # the copy is made all the same, unchecked (said below)
        print(f"chargebox: warning: {exc}", file=sys.stderr)
        key, unreadable = None, True  # exit 1: a cron job mailing failures says so
    config = dataclasses.replace(config, ledger_key=key)
    # Once the snapshot is taken, checking the copy is background work: it yields the
    # CPU to the server (2 cores here, shared).
    made = backup(config, dest, overwrite=force, vacuum=vacuum, after_snapshot=lambda: os.nice(10))
    for path in made.swept:
        print(f"chargebox: removed {path}, the partial copy of a backup killed before it "
              "ended", file=sys.stderr)  # fmt: skip
    print(f"chargebox: {made.summary()}", file=sys.stderr)
    anchored = True
    if made.heads and config.ledger_key:  # the copy's heads: the live file never goes back
        try:
            anchors.record(config, config.ledger_key.encode("utf-8"), list(made.heads), "backup")
        except OSError as exc:  # another file system's anchors, read-only or full; its lock
            anchored = False
            print(f"chargebox: the copy is made, but its heads were not anchored: {exc}",
                  file=sys.stderr)  # fmt: skip
    if not config.ledger_key:
        print(f"chargebox: warning: no ledger key ({config.ledger_key_path} or CHARGEBOX_LEDGER_"
              "KEY): the copy's sealed heads were not checked", file=sys.stderr)  # fmt: skip
    print(
        f"chargebox: the ledger key ({config.ledger_key_path} or CHARGEBOX_LEDGER_KEY) is not "
        "in the copy: keep a copy of it apart, secret; without it the copy cannot be checked "
        "or served",
        file=sys.stderr,
    )
    # the copy is made and anchored whatever an older one's deletion does
    kept = keeping.prune(made.path, keep, made.method != "pg_dump") if keep is not None else True
    return 0 if kept and anchored and not unreadable else 1
