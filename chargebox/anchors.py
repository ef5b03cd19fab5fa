"""Rollback detection: each seller's sealed head, anchored in a file outside the database.

The seals catch an edited ledger, not an *older genuine copy* put back in its place.
So the heads are also written to an anchors file (`<db>.anchors` beside an SQLite file
and its ledger key; `<data-dir>/anchors` for PostgreSQL; or CHARGEBOX_ANCHORS): JSON
lines, appended and fsynced under an flock, each sealed with the ledger key. A
database whose head is behind an anchored one, or whose ledger lacks the anchored
entry with that seal, was rolled back: the audit reports it and start-up refuses,
until `chargebox anchors accept-restore` appends a `restore` line (older lines then
no longer count). Written by the server every CHARGEBOX_ANCHOR_SECONDS (one thread
of one process; never on a sale's path), at each backup, clean audit and clean stop.

A full audit's finding (its `distrust` mark, checkpoints.py) is anchored too, once it
is committed, as a line of kind `mark` (the mark's id, seal and time): a mark deleted
from the database (by whoever gets past its guards) would let the quick audits trust
the checkpoint before it again; anchored, its absence is an audit problem, and the
quick audits trust no checkpoint. A `restore` line ends the marks, as it ends the
heads; not the `access` lines (revocations.py). A chargebox older than a kind skips
its lines, as it skips one it cannot read, and its compaction drops them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from chargebox.clock import now
from chargebox.config import Config
from chargebox.location import synced
from chargebox.wal import durable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: appends are single writes then
    fcntl = None

HEADS = "SELECT seller_id, entry_id, entries, entry_mac FROM seller_head ORDER BY seller_id"
_SEALS = "SELECT entry_id, mac FROM ledger_seal WHERE entry_id IN ({})"
_MARKS = "SELECT id, mac FROM audit_checkpoint WHERE id IN ({})"
COMPACT_AT = 8 * 1024 * 1024  # bytes; then only the newest anchor of each seller is kept
_CHUNK = 500  # ids per IN (...) query
LOCK_WAIT = 5.0  # seconds an append waits for the file's lock before giving up this time
# Anchors file -> the size past which its next append compacts it: COMPACT_AT, or twice
# what the last compaction left, so that a file whose newest anchors alone pass COMPACT_AT
# is not rewritten whole each round; None once a compaction was refused (`chattr +a`).
_COMPACT_PAST: dict[Path, int | None] = {}
log = logging.getLogger("chargebox.anchors")
# Beside an anchors file: its append lock (`_locked`) and its writer's flock (keeper.py).
LOCK, WRITER = ".lock", ".writer"


class Head(NamedTuple):
    """A seller's sealed head: its newest entry, how many it has, that entry's seal."""

    seller_id: int
    entry_id: int
    entries: int
    entry_mac: str


class Anchored(NamedTuple):
    head: Head
    at: str
    by: str


class Mark(NamedTuple):
    """A full audit's finding as anchored: its mark's checkpoint id, seal and stamp
    (`found_at`), and when it was anchored (`at`, after its commit)."""

    id: int
    mac: str
    found_at: str
    at: str
    by: str


class File(NamedTuple):
    """What the anchors file holds since the last restore (`read`)."""

    heads: dict[int, Anchored]  # each seller's newest anchored head
    forged: list[str]  # a complaint for each line whose seal does not verify
    marks: list[Mark]
    access: list[tuple]  # (at, by, record) of each `access` line's records, restores or not


class Loaded(NamedTuple):
    """The file as an audit takes it (`loaded`): its heads and marks, and its problems."""

    heads: dict[int, Anchored]
    problems: list[dict]
    marks: list[Mark]
    access: list[tuple]  # revocations.py


def _mac(key: bytes, kind: str, at: str, by: str, heads: list) -> str:
    message = json.dumps(["anchor", kind, at, by, heads], separators=(",", ":"))
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def line(key: bytes, heads: list[tuple], by: str, kind: str = "heads", at: str | None = None
         ) -> str:  # fmt: skip
    """One sealed record: `heads` (kind `heads`), a deliberate restore (`restore`), an
    audit's finding (`mark`: `heads` is one (id, seal, found_at)), or changes of access
    (`access`: revocations.py)."""
    at = at or now()
    listed = [list(head) for head in heads]
    record = {"kind": kind, "at": at, "by": by, "heads": listed}
    record["mac"] = _mac(key, kind, at, by, listed)
    return json.dumps(record, separators=(",", ":")) + "\n"


def read(path: Path, key: bytes) -> File:
    """The newest anchor of each seller and every mark since the last accepted restore,
    and a complaint for each line whose seal does not verify (ignored: written without
    the key). A line that is not JSON (a write cut by a crash) is skipped silently, like
    a missing one."""
    found = File({}, [], [], [])
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return found
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(raw)
            kind, at, by, heads = (record[k] for k in ("kind", "at", "by", "heads"))
            expected = _mac(key, kind, at, by, heads)
            parsed = _parsed(kind, heads, at, by)
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if not matches(record.get("mac"), expected):
            found.forged.append(f"line {number} of {path} does not match its seal: written "
                                "without the ledger key; ignored")  # fmt: skip
            continue
        if kind == "restore":
            found = File({}, found.forged, [], found.access)
        if kind in ("mark", "access"):
            (found.marks if kind == "mark" else found.access).extend(parsed)
            continue
        for head in parsed:
            known = found.heads.get(head.seller_id)
            if known is None or head.entries >= known.head.entries:
                found.heads[head.seller_id] = Anchored(head, at, by)
    return found


def _parsed(kind: str, heads: list, at: str, by: str) -> list:
    """A line's heads, or its mark (ValueError, TypeError, IndexError if malformed)."""
    if kind == "access":  # each record as it is: revocations.py reads them
        return [(at, by, record) for record in heads]
    if kind != "mark":
        return [Head(*map(int, h[:3]), str(h[3])) for h in heads]
    [(ident, mac, found_at)] = heads
    return [Mark(int(ident), str(mac), str(found_at), at, by)]


def heads(db) -> list[Head]:
    """Every seller's sealed head now (`db`: a Database, a snapshot or a Write)."""
    return [Head(*row) for row in db.rows(HEADS)]


def rollbacks(db, anchored: dict[int, Anchored]) -> list[dict]:
    """An audit problem for each anchored head the database is behind or does not hold."""
    if not anchored:
        return []
    now_heads = {head.seller_id: head for head in heads(db)}
    seals = dict(rows_in(db, _SEALS, [a.head.entry_id for a in anchored.values()]))
    found = []
    for seller_id, (head, at, by) in sorted(anchored.items()):
        has = now_heads.get(seller_id)
        if has is None or has.entries < head.entries:
            what = (
                "no ledger" if has is None else f"{has.entries:,} entries (newest {has.entry_id})"
            )
            message = (f"rolled back: the database holds {what}, but {head.entries:,} entries "
                       f"(newest {head.entry_id}) were anchored at {at} by {by}")  # fmt: skip
        elif not matches(seals.get(head.entry_id), head.entry_mac):
            message = (f"another history: entry {head.entry_id}, anchored at {at} by {by} as "
                       "this seller's, is missing or sealed differently (rolled back and "
                       "written again?)")  # fmt: skip
        else:
            continue
        found.append(problem(seller_id, head.entry_id, message))
    return found


def loaded(config: Config, key: bytes | None) -> Loaded:
    """The anchors file as the check takes it: the newest anchor of each seller, the marks,
    and the problems of the file itself (a forged line, or a file that cannot be read).

    Read it *before* the snapshot the heads are compared in: every head in the file was
    committed before it was written, so a snapshot taken afterwards holds it. Read after
    the snapshot, a head a server anchored meanwhile (committed after the snapshot) looks
    like a rollback: under load, an audit that took seconds saw every seller so."""
    if key is None:
        return Loaded({}, [], [], [])
    try:
        held = read(config.anchors_path, key)
    except OSError as exc:
        unread = problem(None, None, f"cannot read the anchors {config.anchors_path}: {exc}")
        return Loaded({}, [unread], [], [])
    return Loaded(held.heads, [problem(None, None, message) for message in held.forged],
                  held.marks, held.access)  # fmt: skip


def problems(db, found: Loaded) -> list[dict]:
    """The anchor problems of an audit: those of the file, `loaded` before `db`'s snapshot,
    each rollback (a head the database is behind or does not hold), and each mark lost."""
    missing = [
        problem(None, None, f"the finding of the audit of {mark.found_at} (audit checkpoint "
                            f"{mark.id}), anchored by {mark.by}, is missing from the database"
                            " or sealed differently: deleted, or rolled back to before it")
        for mark in lost(db, found.marks)
    ]  # fmt: skip
    return found.problems + rollbacks(db, found.heads) + missing


def lost(db, marks: list[Mark]) -> list[Mark]:
    """The anchored marks the database does not hold with their seals: deleted behind the
    guards, or the database rolled back to before them."""
    if not marks:
        return []
    ids = [mark.id for mark in marks]  # none in a database made before checkpoints
    held = dict(rows_in(db, _MARKS, ids)) if "audit_checkpoint" in db.table_names() else {}
    return [mark for mark in marks if not matches(held.get(mark.id), mark.mac)]


def rows_in(db, sql: str, ids: list[int]) -> list:
    """`sql`'s rows for `ids`, _CHUNK ids to a query (`sql` has `IN ({})`)."""
    found: list = []
    for start in range(0, len(ids), _CHUNK):
        chunk = tuple(ids[start : start + _CHUNK])
        found += db.rows(sql.format(", ".join("?" * len(chunk))), chunk)
    return found


def located(problem: dict) -> str:
    """Where an audit problem lies, as its line begins: "seller 3, entry 9: ", or "" for
    one of the whole database or file (no key, a wrong key, a forged anchors line)."""
    parts = [f"{name} {problem[f'{name}_id']}" for name in ("seller", "entry")
             if problem[f"{name}_id"] is not None]  # fmt: skip
    return f"{', '.join(parts)}: " if parts else ""


def problem(seller_id: int | None, entry_id: int | None, message: str) -> dict:
    return {"invariant": "anchor", "seller_id": seller_id, "entry_id": entry_id,
            "message": message}  # fmt: skip


def record(config: Config, key: bytes, anchored_heads: list[tuple], by: str,
           kind: str = "heads") -> None:  # fmt: skip
    """Append one sealed line (after making the anchored state durable)."""
    durable(config)
    append(config.anchors_path, key, line(key, anchored_heads, by, kind))


def beside(path: Path) -> tuple[Path, ...]:
    """The files kept beside the anchors file at `path`: its lock and its writer's."""
    return tuple(Path(f"{path}{end}") for end in (LOCK, WRITER))


@contextlib.contextmanager
def _locked(path: Path):
    """The anchors file's append lock (its own small file), for one append."""
    fd = os.open(f"{path}{LOCK}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:  # an OSError: callers log it and go on
                    raise TimeoutError(f"{path}.lock held for over {LOCK_WAIT} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the flock


def append(path: Path, key: bytes, text: str) -> None:
    """Append `text` (whole lines) and fsync; compact a file grown past COMPACT_AT."""
    with _locked(path):
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(path):
                text = "\n" + text  # a line cut by a crash stays apart, skipped when read
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            synced(path.parent)
        past = _COMPACT_PAST.get(path, COMPACT_AT)
        if past is not None and size > past:
            try:
                _compact(path, key)
            except OSError as exc:  # the line is written: the append stands
                _not_compacted(path, size, exc)


def _not_compacted(path: Path, size: int, exc: OSError) -> None:
    """An append-only file (EPERM: `chattr +a`) is not tried again in this process (each
    try reads it all); another failure (a full disk) once the file has doubled."""
    appending_only = exc.errno == errno.EPERM
    _COMPACT_PAST[path] = None if appending_only else 2 * size
    why = ("it grows until whoever rotates it compacts it" if appending_only
           else "tried again once it has doubled")  # fmt: skip
    log.warning("%s was not compacted (%s): %s: %s", path, why, type(exc).__name__, exc)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def compact(path: Path, key: bytes) -> None:
    """`_compact` under the file's append lock: a line appended meanwhile is kept."""
    with _locked(path):
        _compact(path, key)


def _compact(path: Path, key: bytes) -> None:
    """Rewrite the file as its newest anchor of each seller (sealed again), its marks and
    its access records, through a temporary file and a rename: what the check reads is
    unchanged; forged lines go."""
    if not path.exists():
        return
    held = read(path, key)
    by_time: dict[tuple[str, str], list[Head]] = {}
    for anchored_head in held.heads.values():
        by_time.setdefault((anchored_head.at, anchored_head.by), []).append(anchored_head.head)
    lines = [line(key, hs, by, at=at) for (at, by), hs in sorted(by_time.items())]
    lines += [line(key, [(m.id, m.mac, m.found_at)], m.by, "mark", m.at) for m in held.marks]
    lines += [line(key, [record], by, "access", at) for at, by, record in held.access]
    left = re.compile(rf"\.{re.escape(path.name)}\.[0-9]+\.compacting")
    for name in os.listdir(path.parent):
        if left.fullmatch(name):  # a compaction's that died: they run under this file's lock
            (path.parent / name).unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.compacting")
    written = "".join(lines).encode("utf-8")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, written)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    synced(path.parent)
    _COMPACT_PAST[path] = max(COMPACT_AT, 2 * len(written))


def refuse_rollback(config: Config, db, key: str) -> File:
    """Start-up: ValueError if the database is older than its anchors; else what they hold
    (revocations.refuse_undone checks the rest)."""
    try:
        held = read(config.anchors_path, key.encode("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the anchors {config.anchors_path}: {exc}") from None
    if not held.heads:
        return held
    if "seller_head" in db.table_names():
        found = rollbacks(db, held.heads)
    else:  # a new, empty file where a database was
        found = [problem(None, None, "the database holds no ledger at all")]
    if not found:
        return held
    first = found[0]
    where = "(the PostgreSQL database)" if config.db_url else str(config.db_path)
    seller = f"seller {first['seller_id']}: " if first["seller_id"] else ""
    raise ValueError(
        f"--db {where} is older than its anchors in {config.anchors_path}: "
        f"{len(found)} problem(s), {seller}{first['message']} (`chargebox anchors check` lists "
        "every one, and any change of access it lacks). If you restored it on purpose, run "
        "`chargebox anchors accept-restore` (same --db); if not, find out who replaced it"
    )


def matches(found: object, expected: str) -> bool:
    """Whether a stored seal (a line's, or the database's: a forged one may hold anything,
    as bytes that are not UTF-8 read by the audit) is the one expected, in constant time.
    Compared as bytes: hmac refuses str that is not ASCII. The seals' and checkpoints' too."""
    text = found if isinstance(found, str) else ""
    return hmac.compare_digest(text.encode("utf-8", "surrogateescape"), expected.encode())
