"""Where a database may live: checked once, at start-up, before anything is created;
then watched while it serves (`Watched`).

A database needs a directory on a real file system where files can be made:
SQLite adds -wal and -shm files beside it, chargebox its lock and key files.
Each mistake is refused here in one line naming --db, instead of surfacing later
as a traceback or as a lock that waits forever. It probes rather than guesses
from the path; only the kernel's own file systems are known by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import tempfile
import threading
import time
from pathlib import Path

from chargebox.errors import DAMAGED, Damaged

log = logging.getLogger("chargebox.db")

# The kernel's views of itself: files can sometimes be made there, but they are not storage.
VIRTUAL_FILESYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2",
                                 "debugfs", "tracefs", "securityfs", "configfs", "pstore", "bpf",
                                 "efivarfs"})  # fmt: skip
MOUNT_TABLE = Path("/proc/self/mounts")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
_WAL_HEADER = 32  # bytes of a -wal file before its first frame
LEFTOVER = 60  # seconds: a secret's temporary file this old is a killed writer's


def check_database_path(path: Path, writing: bool = True) -> None:
    """Refuse a database path chargebox cannot use: ValueError("--db PATH: why").

    Creates the missing directories, as start-up would, and (`writing`) a missing file,
    owner-only. An existing file must be an SQLite database, and open for writing if
    `writing` (the audit only reads it).
    """
    where = f"--db {path}"
    if os.path.islink(path) and not os.path.exists(path):
        raise ValueError(f"{where}: is a link to {os.readlink(path)}, which does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{where}: is a directory; name a file inside it")
    nearest = _nearest_existing(path.absolute().parent)
    if not os.path.isdir(nearest):
        raise ValueError(f"{where}: {nearest} is a file, not a directory")
    kind = filesystem_type(nearest)
    if kind in VIRTUAL_FILESYSTEMS:
        raise ValueError(f"{where}: {nearest} is on {kind}, a view of the kernel, not storage")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{where}: cannot create {path.parent} ({exc.strerror})") from None
    # A reader needs no file of its own beside a rollback-journal file (a backup's copy),
    # but a WAL database needs its -shm beside it.
    try:
        if writing or _read_version(path) == 2:  # in WAL mode
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".chargebox-probe-"):
                pass
    except OSError as exc:
        raise ValueError(
            f"{where}: cannot create files in {path.parent} ({exc.strerror})"
        ) from None
    if not os.path.exists(path):
        if writing:  # a new database holds phones and key hashes: owner-only from its first
            # byte, whatever the umask, and so its -wal and -shm (SQLite copies its mode)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    if not os.path.isfile(path):
        raise ValueError(f"{where}: is not a regular file")
    try:
        with open(path, "r+b" if writing else "rb") as handle:
            header = handle.read(20)  # to its read version (byte 18)
    except OSError as exc:
        doing = "write" if writing else "read"
        raise ValueError(f"{where}: cannot {doing} the database file ({exc.strerror})") from None
    if header and header[: len(SQLITE_HEADER)] != SQLITE_HEADER:
        raise ValueError(f"{where}: is not an SQLite database (a wrong path?)")
    if len(header) == 20 and header[18] == 1:  # in rollback-journal mode
        _refuse_another_files_wal(path, where)
    if writing and (said := damage_found(path)) is not None:
        raise ValueError(
            f"{where}: a server found it damaged ({said}): restore a backup (README,"
            f" Restore), or, if `PRAGMA integrity_check` now says ok, delete {damage_mark(path)}"
        )


def _refuse_another_files_wal(path: Path, where: str) -> None:
    """A `-wal` with frames beside a file whose header says it is not in WAL mode (the
    caller read it) is another file's: a backup's copy put back over the live file, the
    old `-wal` left beside it (README, restore, step 2). SQLite would replay it into the
    copy, and call the result malformed: the operator would take a good backup for a bad
    one (helper-110). Refused, naming what to move aside."""
    wal = Path(f"{path}-wal")
    try:
        frames = wal.stat().st_size > _WAL_HEADER
    except OSError:  # none, or not ours to see: SQLite says what it finds
        return
    if frames:
        raise ValueError(f"{where}: {wal} beside it is another file's (this one is not in WAL "
                         f"mode: a backup's copy put back, the old -wal left?); move {wal} and "
                         f"{path}-shm aside, then try again")  # fmt: skip


def _read_version(path: Path) -> int | None:
    """An SQLite file's read version, from its header: 2 in WAL mode, 1 in rollback-journal
    mode; None if it has no whole header (missing, unreadable: said below; new, empty)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return None
    return header[18] if header.startswith(SQLITE_HEADER) and len(header) == 20 else None


def filesystem_type(directory: Path) -> str | None:
    """The type of the file system holding `directory`, from the mount table; None if unknown."""
    try:
        table = MOUNT_TABLE.read_text()
        target = directory.resolve()
    except OSError:  # not Linux, or no /proc: the probes above still run
        return None
    found, depth = None, -1
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (point == target or point in target.parents) and len(point.parts) >= depth:
            found, depth = fields[2], len(point.parts)  # the deepest, latest mount wins
    return found


def _nearest_existing(directory: Path) -> Path:
    while not os.path.exists(directory) and directory != directory.parent:
        directory = directory.parent
    return directory


class Watched:
    """An SQLite file as this process serves it, and what was found wrong with it: damaged
    (a read or a write said so: `damaged`), gone from its path, or no longer the file
    there (another put in its place under the server, whose connections write on into the
    old one, where what they acknowledge is lost with it). One for each file a process
    serves (`watched`), whichever of its Databases (the anchor thread's too) finds it: it
    is told once in the log (a server's: a command says it in its one line), and from then
    on every write and `/health` answer 503, until a restart."""

    def __init__(self, path: Path, identity: tuple[int, int] | None) -> None:
        self.path = path
        self.identity = identity  # the file served: device, inode (None: not made yet)
        self.found: str | None = None  # what is wrong, in words
        self.served = False  # by a server (logged), not a command (its one line says it)

    def opened(self) -> None:
        """The file at the path now is the one served, if none was known (a new file)."""
        if self.identity is None:
            self.identity = _identity(self.path)

    def damage(self) -> str | None:
        """What is wrong with the file, or None while it is sound as far as a stat tells."""
        if self.found is None and self.identity is not None:
            now = _identity(self.path)
            if now is None:
                self.damaged("it is gone from its path")
            elif now != self.identity:
                self.damaged("another file was put in its place under this server")
        return self.found

    def check(self) -> None:
        """Before a write, under the write lock: Damaged if anything is wrong."""
        self.opened()
        if self.damage() is not None:
            raise Damaged(DAMAGED)

    def damaged(self, reason: str) -> None:
        with _lock:
            if self.found is not None:
                return
            self.found = reason
        if self.served:
            log.error("the database %s: %s; writes and /health answer 503 until the server is"
                      " restarted on a sound file", self.path, reason)  # fmt: skip
            if reason.startswith("SQLite:") and _identity(self.path) == self.identity:
                _mark_damaged(self.path, reason, self.identity)  # a restart keeps it


def damage_mark(path: Path) -> Path:
    """Beside a file a server found damaged (SQLite said so): when, SQLite's words, and
    which file (device and inode). While it is there and names the file at the path,
    `serve` and the commands that write refuse it, so that a restart (a container's
    health check, say) does not serve it on as if sound; a file restored in its place
    (moved there: another inode) is not refused."""
    return path.with_name(path.name + ".damaged")


def damage_found(path: Path) -> str | None:
    """What the damage mark beside `path` says (when, SQLite's words), if it names the file
    there now; None if there is none, or it is another file's (the damaged one was put
    aside, and this one restored)."""
    marked = damage_mark(path)
    if not marked.exists():
        return None
    said, _, of = marked.read_text(errors="replace").strip().partition("\nfile ")
    return said if of == _named(_identity(path)) else None


def _mark_damaged(path: Path, reason: str, identity: tuple[int, int]) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        fd = os.open(damage_mark(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as marked:
            marked.write(f"{when} {reason}\nfile {_named(identity)}\n")
    except OSError as exc:  # a read-only or full disk: the log has said it
        log.error("could not write %s: %s", damage_mark(path), exc.strerror)


_lock = threading.Lock()
_watched: dict[tuple[str, tuple[int, int] | None], Watched] = {}


def watched(path: Path, identity: tuple[int, int] | None, served: bool = False) -> Watched:
    """This process's one Watched of the file `identity` names at `path` (start-up's,
    Config.db_file), or, given None, of the file there now; `served`: by a server."""
    identity = identity or _identity(path)
    with _lock:
        found = _watched.setdefault((str(path.absolute()), identity), Watched(path, identity))
        found.served = found.served or served
    return found


def _named(identity: tuple[int, int] | None) -> str:
    return "none" if identity is None else f"{identity[0]}:{identity[1]}"


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file `path` names now (its device and inode); None if there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def refuse_a_new_file(config) -> None:
    """ValueError unless the SQLite file `config` names exists: a command run with a mistyped
    --db made a new database and acted there (a seller, a key; `rotate-admin-token` wrote
    the token file the real database's servers read at their next start)."""
    if not config.db_url and (not config.db_path.exists() or _empty(config.db_path)):
        raise ValueError(f"--db {config.db_path}: no database there (check the path; `chargebox "
                         "init-db` or `chargebox serve` makes one)")  # fmt: skip


def _empty(path: Path) -> bool:
    """A file of no bytes: what a start refused (or killed) before the schema leaves."""
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def synced(path: Path) -> None:
    """fsync a file or a directory, named by its path: what was written to the file, or
    the names just given in the directory, survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def written_secret(path: Path, secret: str, *, replacing: bool) -> None:
    """Put `secret` in the file at `path`, owner-only, whole and on disk before the call
    returns: written to a temporary file beside it (a name of its own: two writers with
    one pid, threads or containers' PID 1s, each have theirs) and synced, then named
    (over the old one if `replacing`, else FileExistsError if another writer named its
    own first), then the directory synced; a power cut never leaves the file empty or
    half written, and a write that fails leaves nothing behind. A killed writer's
    temporary file (a secret, perhaps one since replaced) is removed by the next write
    (and by each start: commands.stored_secret)."""
    without_leftovers(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        synced(temporary)
        (os.replace if replacing else os.link)(temporary, path)
        synced(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def without_leftovers(path: Path) -> None:
    """Remove the temporary files of `path`'s killed writers (written_secret's, LEFTOVER
    seconds old: a live writer's is younger), as far as the folder allows."""
    named = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}")
    with contextlib.suppress(OSError):  # best effort: a read-only folder keeps them
        for found in path.parent.iterdir():
            if named.fullmatch(found.name) and time.time() - found.lstat().st_mtime > LEFTOVER:
                with contextlib.suppress(FileNotFoundError):  # another start's sweep
                    found.unlink()


def in_words(exc: OSError) -> tuple[str, int]:
    """What an OS error a command met means, and its exit status: 2, a refusal (systemd
    does not restart one), for a file this user may not use, naming whose it is; 1 for the
    rest, which may pass (a full disk; the start-up lock held by another start or a long
    migrate)."""
    import filelock

    if isinstance(exc, filelock.Timeout):
        return (f"{exc.lock_file} is held by another chargebox (starting, or a migrate):"
                " start again once it is done", 1)  # fmt: skip
    if isinstance(exc, PermissionError) and exc.filename:
        where = Path(exc.filename).absolute()  # data/... is relative to where it runs
        return (f"{where}: {exc.strerror} ({_whose(where)}): run"
                " chargebox as the user who owns the data directory (under systemd: runuser"
                " -u USER -- chargebox ...), or give the file to that user (chown; chattr -i"
                " if it is immutable)", 2)  # fmt: skip
    return str(exc), 1


def _whose(path: Path) -> str:
    for place, said in ((path, "owned by {}"), (path.parent, "in a directory owned by {}")):
        with contextlib.suppress(OSError):
            uid = place.stat().st_uid
            try:
                return said.format(pwd.getpwuid(uid).pw_name)
            except KeyError:
                return said.format(f"uid {uid}")
    return "whose, unknown"
