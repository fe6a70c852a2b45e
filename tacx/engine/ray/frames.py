"""The control side's half of the node runner's protocol (node.py, which the nodes run): the
spec a job carries in its environment, and the frames picked out of the job's log. Kept out
of node.py, whose text travels with every job."""

from __future__ import annotations

import base64
import json
import zlib

from tacx.engine.ray.node import FRAME_KINDS, FRAME_LEAD, SPEC_ENV

MAX_SPEC_CHARS = 131072 - len(SPEC_ENV) - 2  # Linux's MAX_ARG_STRLEN caps one "NAME=value\0"


def encode_spec(spec: dict) -> str:
    """The TACX_RAY_SPEC value for `spec`; ValueError when it would not fit in one variable."""
    raw = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii")
    if len(text) > MAX_SPEC_CHARS:
        raise ValueError(f"the Ray job spec is {len(text)} characters encoded; "
                         f"one environment variable holds at most {MAX_SPEC_CHARS}")
    return text


def parse_frame(line: str, nonce: str) -> tuple[str, str] | None:
    """(kind, payload) when `line` is a frame of this nonce, else None (Ray's lines, other jobs').
    Split the log at "\\n" only: str.splitlines() also cuts at \\x1e (a frame cut so is still read)."""
    lead = f"{FRAME_LEAD}{nonce} "
    at = line.find(lead)
    if not nonce or (at < 0 and not line.startswith(lead[1:])):
        return None
    rest = line[at + len(lead):] if at >= 0 else line[len(lead) - 1:]
    kind, sep, payload = rest.rstrip("\r\n").partition(" ")
    return (kind, payload) if sep and kind in FRAME_KINDS else None
