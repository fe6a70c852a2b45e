"""Ray job ids of tacx's daughters: `tacx-<home>-<task>-<stage>-<attempt>`, the home as a
short hash of its path and an id made once and kept in it. Derived from the daughter's
marker alone, so a tacx restarted after a crash finds its jobs again; the kept id keeps a
home deleted and made anew at the same path away from the old home's jobs."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


HOME_ID_FILE = "ray-id"


def submission_id(marker: str) -> str:
    """The Ray job of a daughter, from its marker `<home>#<task>/<stage>/<attempt>`: the
    home as a short hash (Ray ids are plain words), the rest as it is."""
    home, _, rest = marker.rpartition("#")
    task, stage, attempt = rest.split("/")
    return f"tacx-{_home_digest(home)}-{task}-{stage}-{attempt}"


def home_prefix(marker_prefix: str) -> str:
    """The start of every submission id of one home's jobs."""
    return f"tacx-{_home_digest(marker_prefix.removesuffix('#'))}-"


def _home_digest(home: str) -> str:
    """The home's path and its id, hashed: a home deleted and made anew at the same path
    (its task ids start at 1 again) gets ids of its own, never the old home's jobs, which
    Ray remembers."""
    salt = _home_id(home)
    return hashlib.sha256(f"{home}\0{salt}".encode() if salt else home.encode()).hexdigest()[:10]


_home_ids: dict[str, str] = {}


def _home_id(home: str) -> str:
    """A word made once for a home and kept in it (written whole, then linked into place:
    a tacx reading it meanwhile never sees it half made); "" where the home cannot keep one
    (not remembered: the home may exist at the next call)."""
    if home not in _home_ids:
        found = _read_or_make_home_id(Path(home) / HOME_ID_FILE)
        if not found:
            return ""
        _home_ids[home] = found
    return _home_ids[home]


def _read_or_make_home_id(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return ""
    draft = path.with_name(f".{HOME_ID_FILE}.{secrets.token_hex(4)}")
    try:
        draft.write_text(secrets.token_hex(8), encoding="ascii")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another tacx made it first: theirs counts
        return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return ""
    finally:
        draft.unlink(missing_ok=True)
