"""Keyset cursors: a page's last position (a time, or a search rank, and an id) as an opaque string, shared by
every listing."""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import UTC, datetime

from service.errors import DomainError

_NOT_A_CURSOR = (ValueError, OverflowError, binascii.Error, UnicodeDecodeError)
_REAL_MAX = 3.4028234663852886e38  # the largest PostgreSQL real: a rank past it cannot be sent as one


def encode_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    return _pack(moment.isoformat(), row_id)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        moment_text, row_id = _unpack(cursor)
        moment = datetime.fromisoformat(moment_text)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has an offset")
        # In UTC: a made-up offset at the ends of the calendar overflows here, not in Postgres.
        return moment.astimezone(UTC), row_id
    except _NOT_A_CURSOR as exc:
        raise _invalid() from exc


def encode_rank_cursor(rank: float, row_id: uuid.UUID) -> str:
    """A search page's last position; ``repr`` gives back exactly the same float (the real PostgreSQL ranked by)."""
    return _pack(repr(rank), row_id)


def decode_rank_cursor(cursor: str) -> tuple[float, uuid.UUID]:
    try:
        rank_text, row_id = _unpack(cursor)
        rank = float(rank_text)
        if not (math.isfinite(rank) and abs(rank) <= _REAL_MAX):
            raise ValueError("a rank is a finite real")
        return rank, row_id
    except _NOT_A_CURSOR as exc:
        raise _invalid() from exc


def _pack(position: str, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{position}|{row_id}".encode()).decode().rstrip("=")


def _unpack(cursor: str) -> tuple[str, uuid.UUID]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    position, row_id = raw.split("|", 1)
    return position, uuid.UUID(row_id)


def _invalid() -> DomainError:
    return DomainError("invalid_cursor", "before is not a cursor returned by this endpoint")
