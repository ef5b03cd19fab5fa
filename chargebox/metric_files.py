"""`--processes K`'s metrics files: their directory, an ended process's counts, a scrape's read.

prometheus-client's multiprocess mode keeps each process's values in files of one
directory (`counter_<pid>.db`, `histogram_<pid>.db`), and a scrape answered by any child
sums them all. Here: the directory (made, held while a server runs, swept once nobody
does), the files of a process that ended (added into one file per kind and removed), and
the scrape's read of them under the directory's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

from chargebox.errors import Unavailable, raised_at

_log = logging.getLogger("chargebox.metrics")
SUMMED = ("counter", "histogram")  # the kinds of file whose values add up (no gauge is in one)
ENDED = "ended"  # in place of a pid: the file of every ended process's counts
_UNFOLDED: set[int] = set()  # ended processes whose files are still their own (ended())
SHARED_PREFIX = "chargebox-metrics-"  # `--processes K`'s directories, in the temporary one
LEFT_AFTER = 60.0  # seconds before a directory nobody holds is taken for a dead server's
_HEADER = 8  # a file's first bytes: how much of it is used, then padding


def shared_directory(temporary: Path | None = None) -> tuple[Path, int]:
    """A new directory for `--processes K` to share its metrics through, and a descriptor
    of its `.alive` file, flocked shared: held by this process and by the children it
    forks (they inherit it) until the last of them ends. First, the directories of
    servers killed with SIGKILL, which nobody holds, are removed from the temporary
    directory (one a minute old at least: a younger one's server may not hold it yet)."""
    temporary = temporary or Path(tempfile.gettempdir())
    sweep(temporary, time.time())
    made = Path(tempfile.mkdtemp(prefix=SHARED_PREFIX, dir=temporary))
    alive = os.open(made / ".alive", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(alive, fcntl.LOCK_SH)
    return made, alive


def sweep(temporary: Path, now: float) -> None:
    """Remove this user's metrics directories in `temporary` that no process holds."""
    for left in temporary.glob(SHARED_PREFIX + "*"):
        try:
            found = left.lstat()
            if (not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid()
                    or now - found.st_mtime < LEFT_AFTER):  # fmt: skip
                continue
            alive = os.open(left / ".alive", os.O_RDONLY)  # none: an older chargebox's, kept
        except OSError:
            continue
        try:
            fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(left, ignore_errors=True)
        except BlockingIOError:
            pass  # its server, or one of its children, runs
        finally:
            os.close(alive)


def ended(directory: Path, pid: int) -> None:
    """A forked server died: its counts stay in the sums (totals never go back), added to
    the one file per kind that holds every ended process's, and its own files go.

    So a server that replaces children for months (or a crash loop, one replacement every
    30 s) keeps a file per kind per *live* child, not per child it ever started: each
    scrape reads them all. A scrape never sees the counts twice or not at all: it reads
    under the directory's lock shared, and the fold takes it alone. The sums are exact
    (`metrics._exact`), so adding them up in another order moves none. A fold that fails or
    finds the lock held (a scrape stopped midway) leaves the files as they are, still summed
    by every scrape, and is tried again as the next process ends: the supervisor never waits.
    """
    multiprocess.mark_process_dead(pid, str(directory))
    _UNFOLDED.add(pid)
    try:
        with held(directory, fcntl.LOCK_EX | fcntl.LOCK_NB):
            for one in sorted(_UNFOLDED):
                try:
                    for kind in SUMMED:
                        _fold(directory / f"{kind}_{one}.db", directory / f"{kind}_{ENDED}.db")
                except Exception as exc:  # noqa: BLE001 - kept and summed as they are
                    _log.warning("the metrics of ended server process %d stay in its own "
                                 "files for now: %s (at %s)", one, type(exc).__name__,
                                 raised_at(exc))  # fmt: skip
                else:
                    _UNFOLDED.discard(one)
    except BlockingIOError:
        pass  # a scrape reads the files now: folded as the next process ends
    except OSError as exc:  # its directory gone (removed by hand): nothing to fold into
        _log.warning("the metrics of ended server processes were not folded: %s (at %s)",
                     type(exc).__name__, raised_at(exc))  # fmt: skip


def _fold(own: Path, total: Path) -> None:
    """`own`'s values added to `total`'s, written whole to a new file that then takes
    `total`'s place: a failure midway leaves both as they were."""
    if not own.exists():
        return
    sums: dict[str, tuple[float, float]] = {}  # key -> (value, timestamp)
    for path in _written([total, own]):
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(path)):
            sums[key] = (sums.get(key, (0.0, 0.0))[0] + value, timestamp)
    fresh = total.with_name(f".{total.name}.folding")  # no `.db`: no scrape reads it
    fresh.unlink(missing_ok=True)
    into = MmapedDict(str(fresh))
    try:
        for key, (value, timestamp) in sums.items():
            into.write_value(key, value, timestamp)
    finally:
        into.close()
    os.replace(fresh, total)
    own.unlink()


def _written(paths: list) -> list:
    """The files among `paths` that hold values. One shorter than its header holds none:
    a process makes its file empty, then sizes it (killed in between, it stays so), and
    prometheus-client's reader fails on it."""
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # folded away, or never made
            if os.stat(path).st_size >= _HEADER:
                found.append(path)
    return found


class Summed(multiprocess.MultiProcessCollector):
    """Every process's values, summed (prometheus-client's collector), from the files that
    hold any: a child that has just made its file does not fail the scrape. One damaged (a
    disk's damage; its values unreadable) fails it, 503, the log naming it: left out, its
    counts would fall (a reset to Prometheus), so moving it aside is the operator's call."""

    def collect(self):
        paths = _written(sorted(Path(self._path).glob("*.db")))
        try:
            return self.merge(paths, accumulate=True)
        except Exception:  # noqa: BLE001 - which file, said below
            damaged = [path for path in paths if not _readable(path)]
            _log.warning(
                "a scrape of /metrics failed: %s cannot be read (damaged?); move it "
                "aside to scrape again, its counts lost",
                ", ".join(map(str, damaged)) or "a file",
            )
            raise Unavailable("the server's metrics files cannot be read: its log names the "
                              "damaged one") from None  # fmt: skip


def _readable(path: Path) -> bool:
    try:
        list(MmapedDict.read_all_values_from_file(str(path)))  # a generator: read it all
    except Exception:  # noqa: BLE001 - any failure of prometheus-client's reader
        return False
    return True


@contextlib.contextmanager
def held(directory: Path, how: int) -> Iterator[None]:
    """The metrics directory's lock: shared to read every file, alone to fold one
    (LOCK_NB: BlockingIOError if a scrape holds it)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # lets the lock go
