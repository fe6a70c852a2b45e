"""The server's bearer token: a secret in the home (`token`, mode 0600) that every route
but /health asks for.

It is made readable by its owner only from the first byte: written to a new file opened
O_CREAT|O_EXCL with mode 0600, then linked into place (so no reader ever sees half a token
and two tacx starting at once agree on one). A token file anyone else can read is refused,
not quietly tightened: the secret may have been read already, so the way out is a new one
(`tacx token --rotate`)."""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from tacx.home import Home, make_home_dir

TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
SHORTEST = 32  # a file holding less than this is not a token tacx made


class TokenError(Exception):
    """The token file cannot be used: a sentence that says what to do."""


def token_path(home: Home) -> Path:
    return home.root / "token"


def _write_new(path: Path, token: str) -> Path:
    """The token in a new private file beside `path`; returns that file's path."""
    temp = path.with_name(f".token.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def read_token(home: Home) -> str:
    """The token, or TokenError when the file is missing, not private, or not a token."""
    path = token_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TokenError(f"no token yet in {home.root}: `tacx token` makes one") from None
    except OSError as exc:
        raise TokenError(f"{path}: cannot be read ({exc.strerror}); `tacx token --rotate` makes a new one") from None
    try:
        info = os.fstat(fd)
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise TokenError(f"{path} is not a regular file; remove it, then `tacx token` makes a token")
    if info.st_mode & 0o077 or info.st_uid != os.getuid():
        mode = stat.S_IMODE(info.st_mode)
        who = "others can read it" if info.st_uid == os.getuid() else "it belongs to another user"
        raise TokenError(
            f"{path} is refused: {who} (mode {mode:04o}), so the token may have leaked;"
            " `tacx token --rotate` makes a new one only you can read")
    token = data.decode("ascii", "replace").strip()
    if len(token) < SHORTEST or not token.replace("-", "").replace("_", "").isalnum():
        raise TokenError(f"{path} does not hold a token tacx made; `tacx token --rotate` makes a new one")
    return token


def ensure_token(home: Home) -> str:
    """The token, made first if there is none."""
    path = token_path(home)
    if not path.exists() and not path.is_symlink():
        make_home_dir(home.root)
        temp = _write_new(path, secrets.token_urlsafe(TOKEN_BYTES))
        try:
            os.link(temp, path)  # fails when another tacx made one meanwhile: theirs is kept
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return read_token(home)


def rotate_token(home: Home) -> str:
    """A new token in place of the old one (a server running here accepts only the new
    one from its next request on)."""
    make_home_dir(home.root)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    path = token_path(home)
    os.replace(_write_new(path, token), path)
    return read_token(home)


class TokenCheck:
    """Compares a request's bearer token with the home's, in constant time. The file is
    read again only when it changed (a rotate, a chmod), asked with a stat per request."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._seen: tuple[int, ...] | None = None
        self._token = b""

    def current(self) -> bytes:
        try:
            info = os.stat(token_path(self.home))
        except OSError:
            return b""  # gone: nobody gets in until a token is made again
        key = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_mode, info.st_uid)  # a chmod changes ctime
        if key != self._seen:
            try:
                self._token = read_token(self.home).encode()
            except TokenError:
                self._token = b""  # loosened or damaged meanwhile: refuse everyone
            self._seen = key
        return self._token

    def allows(self, authorization: str | None) -> bool:
        scheme, _, given = (authorization or "").partition(" ")
        expected = self.current()
        if scheme.lower() != "bearer" or not expected:
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)
