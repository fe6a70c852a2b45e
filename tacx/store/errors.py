"""Why the store cannot be used, in one sentence that names the file and what to do.

Every sqlite3 or OS error met while opening, reading or writing `tacx.db` (or creating the
home around it) is turned into a StoreError here, for the CLI's connections and the
engine's async Store alike: each cause is worded once, and a user never meets a
traceback for a corrupt file, a full disk or a read-only folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

# SQLite's primary result codes (the low byte of an extended code).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _PROTOCOL, _AUTH, _NOTADB = 13, 14, 15, 23, 26
# Causes outside tacx (the file, the disk, another process): anything else is a bug.
_ENVIRONMENT = {_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _PROTOCOL, _AUTH, _NOTADB}
_NEARLY_FULL = 256 * 1024  # bytes free below which an I/O error is read as a full disk


class StoreError(Exception):
    """The database cannot be used (written by a newer tacx, corrupt, unreachable)."""


def is_environmental(exc: BaseException) -> bool:
    """True for a sqlite3 error caused by the file, the disk or another process, which
    explain() words for the user; False for one caused by tacx's own SQL (a bug)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # raised by Python code, not by SQLite: judge by the words
        return _by_words(str(exc)) is not None
    return code & 0xFF in _ENVIRONMENT


def explain(exc: BaseException, db: Path) -> StoreError:
    """The StoreError a user reads for exc, met while using the database at db."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        return StoreError(_os_error(exc, db))
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else _by_words(str(exc))
    return StoreError(_sqlite_error(primary, str(exc), db))


def describe(exc: BaseException, db: Path) -> str:
    """exc as a user reads it: the sentence for the store's own errors, repr for a bug."""
    if isinstance(exc, StoreError) or is_environmental(exc):
        return str(explain(exc, db))
    return repr(exc)


def home_is_file(db: Path) -> StoreError | None:
    """The error for a home that exists as something other than a folder, else None."""
    home = db.parent
    if home.exists() and not home.is_dir():
        return StoreError(f"the home {home} is a file, not a folder: move it aside, or choose another home with --home DIR")
    return None


def wal_unreadable(db: Path) -> StoreError:
    """A read-only folder holding a database with changes still in its -wal file."""
    return StoreError(
        f"cannot read {db}: its folder is read-only, and SQLite must create {db.name}-shm there to read "
        f"the changes still in {db.name}-wal: make {db.parent} writable, or copy it somewhere writable "
        "and point --home at the copy"
    )


def _by_words(message: str) -> int | None:
    text = message.lower()
    for words, code in (
        ("not a database", _NOTADB), ("malformed", _CORRUPT), ("disk is full", _FULL), ("is locked", _BUSY),
        ("readonly", _READONLY), ("read-only", _READONLY), ("unable to open", _CANTOPEN), ("disk i/o", _IOERR),
    ):
        if words in text:
            return code
    return None


def _sqlite_error(code: int | None, message: str, db: Path) -> str:
    if db.is_dir():
        return f"{db} is a folder, not a database file: move it aside (mv {db} {db}.broken) and tacx starts a new store there"
    if problem := home_is_file(db):
        return str(problem)
    if code in (_NOTADB, _CORRUPT):
        return (
            f"{db} is corrupt ({message}): move it aside (mv {db} {db}.broken{_companions(db)}) "
            "to start a new store, or restore it from a backup"
        )
    if code == _FULL or (code in (_IOERR, _CANTOPEN) and _nearly_full(db)):  # no room for -wal or -shm
        return _full(db, message)
    if code in (_BUSY, _LOCKED):
        return (
            f"{db} is locked: another process has held a write lock on it for longer than the busy timeout "
            f"({message}): wait for it to finish, or find it with `fuser {db}` and end it"
        )
    if code in (_READONLY, _PERM, _AUTH, _CANTOPEN):
        return _no_access(db, message)
    if code == _IOERR:
        return (
            f"reading or writing {db} failed ({message}): the disk may be failing or gone; "
            "check it (dmesg), and copy the home elsewhere if this keeps happening"
        )
    return f"cannot use {db} ({message})"


def _no_access(db: Path, message: str) -> str:
    folder = db.parent
    if not folder.exists():
        return f"cannot create {db}: its folder {folder} does not exist and could not be made ({message})"
    if db.exists() and not os.access(db, os.R_OK):
        return f"cannot read {db} (permission denied): ask its owner for access, or use a home of your own with --home DIR"
    if not folder_writable(folder):
        return (
            f"the folder {folder} is {_why_readonly(folder)}, and SQLite must write there beside {db.name} "
            f"({message}): make it writable, or choose another home with --home DIR"
        )
    if db.exists() and not os.access(db, os.W_OK):
        return (
            f"{db} is read-only ({message}): make it writable (chmod u+w {db}) to change tasks; "
            "tacx ls, show and logs can still read it"
        )
    return f"cannot open {db} ({message}): check that it and its folder {folder} belong to you"


def _os_error(exc: OSError, db: Path) -> str:
    where = Path(exc.filename) if exc.filename else db.parent
    reason = exc.strerror or str(exc)
    if (problem := home_is_file(db)) is not None:
        return str(problem)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot create {where} ({reason}): a file stands where a folder should be: move it aside, or choose another home with --home DIR"
    if exc.errno == errno.ENOSPC:
        return _full(db, reason)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        blocked = where if where.is_file() and exc.errno != errno.EROFS else where if where.is_dir() else where.parent
        return (
            f"cannot {'write' if where.exists() else 'create'} {where} ({reason}): {blocked} is {_why_readonly(blocked)}: "
            "make it writable, or choose another home with --home DIR"
        )
    return f"cannot use {where} ({reason})"


def _full(db: Path, message: str) -> str:
    if _nearly_full(db):
        return (
            f"the disk holding {db} is full ({message}; {_free(db)} left): free space on it; what was "
            "committed before is kept (tacx ls shows where each task stands)"
        )
    return (
        f"{db} cannot grow ({message}, yet its disk has {_free(db)} free: a quota or a file size limit?): "
        "raise the limit or free space; what was committed before is kept (tacx ls shows where each task stands)"
    )


def _companions(db: Path) -> str:
    present = [f"{db.name}{end}" for end in ("-wal", "-shm") if Path(f"{db}{end}").exists()]
    return f", and likewise {' and '.join(present)}" if present else ""


def folder_writable(folder: Path) -> bool:
    """Whether SQLite could create its -wal and -shm files in folder."""
    return os.access(folder, os.W_OK | os.X_OK) and not _read_only_mount(folder)


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _why_readonly(folder: Path) -> str:
    return "on a read-only file system" if _read_only_mount(folder) else "read-only for you (permission denied)"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _nearly_full(db: Path) -> bool:
    try:
        return shutil.disk_usage(_existing(db.parent)).free < _NEARLY_FULL
    except OSError:
        return False


def _free(db: Path) -> str:
    try:
        free = shutil.disk_usage(_existing(db.parent)).free
    except OSError:
        return "unknown space"
    return f"{free // 1024} KiB" if free < 10 * 2**20 else f"{free // 2**20} MiB"
