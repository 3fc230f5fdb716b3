"""Every query on the api_tokens table (one owner): tokens are stored only as hashes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage import models
from storage.db import transaction, translated_errors

_tokens = models.API_TOKENS

_LOOKUP = sa.select(_tokens.c.id, _tokens.c.service, _tokens.c.scopes).where(
    _tokens.c.token_hash == sa.bindparam("token_hash"), _tokens.c.revoked_at.is_(None)
)


def insert(db: Engine, values: dict[str, Any]) -> int:
    """A new token's row; its id."""
    with transaction(db) as conn:
        inserted = conn.execute(_tokens.insert().values(**values)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def listing(db: Engine) -> list[dict[str, Any]]:
    """Every token, without its hash, by id."""
    query = sa.select(
        _tokens.c.id,
        _tokens.c.service,
        _tokens.c.scopes,
        _tokens.c.prefix,
        _tokens.c.created_at,
        _tokens.c.revoked_at,
    ).order_by(_tokens.c.id)
    with translated_errors(), db.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def revoke(db: Engine, now: datetime, token_id: int) -> bool:
    """Revoke a live token; whether there was one."""
    with transaction(db) as conn:
        done = conn.execute(
            _tokens.update()
            .where(_tokens.c.id == token_id, _tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
    return bool(done)


def live(db: Engine, token_hash: str) -> Any:
    """The live token with this hash (id, service, scopes), or None."""
    with translated_errors(), db.connect() as conn:
        return conn.execute(_LOOKUP, {"token_hash": token_hash}).first()
