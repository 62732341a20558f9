"""Files of the Batch API: stored in the ledger database, visible only to their owner."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.errors import NotFound
from spillgate.ledger.batch_tables import batch_files
from spillgate.ledger.store import Ledger
from spillgate.types import JSON

INPUT_PURPOSE = "batch"
OUTPUT_PURPOSE = "batch_output"
_META = [c for c in batch_files.c if c.name != "content"]


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def file_object(row: dict[str, Any]) -> JSON:
    """The OpenAI `file` object of a stored row."""
    return {
        "id": row["file_id"], "object": "file", "bytes": row["bytes"],
        "created_at": int(row["created_at"].timestamp()), "filename": row["filename"],
        "purpose": row["purpose"], "status": "processed", "status_details": None,
        "expires_at": None,
    }


def file_row(owner: str, purpose: str, filename: str, content: bytes,
             now: datetime, file_id: str | None = None) -> dict[str, Any]:
    return {
        "file_id": file_id or new_file_id(), "owner": owner, "purpose": purpose,
        "filename": filename, "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(), "content": content, "created_at": now,
    }


async def insert_file(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(insert(batch_files).values(**row))


class FileStore:
    """Upload, describe and read files; another key's file is a 404, like a missing one."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def create(self, owner: str, purpose: str, filename: str, content: bytes) -> JSON:
        row = file_row(owner, purpose, filename, content, self._ledger.now())
        async with self._ledger.transaction() as conn:
            await insert_file(conn, row)
        return file_object(row)

    async def describe(self, owner: str, file_id: str) -> JSON:
        async with self._ledger.reading() as conn:
            row = (await conn.execute(select(*_META).where(
                batch_files.c.file_id == file_id, batch_files.c.owner == owner))).first()
        if row is None:
            raise _missing(file_id)
        return file_object(dict(row._mapping))

    async def content(self, owner: str, file_id: str) -> bytes:
        async with self._ledger.reading() as conn:
            data = await conn.scalar(select(batch_files.c.content).where(
                batch_files.c.file_id == file_id, batch_files.c.owner == owner))
        if data is None:
            raise _missing(file_id)
        return bytes(data)

    async def input_content(self, owner: str, file_id: str) -> bytes:
        """The content of an input (purpose `batch`) file of this owner, else 404/400."""
        info = await self.describe(owner, file_id)
        if info["purpose"] != INPUT_PURPOSE:
            raise NotFound("input_file_id is not a file of purpose `batch`", param="input_file_id",
                           code="invalid_file")
        return await self.content(owner, file_id)


def _missing(_file_id: str) -> NotFound:
    return NotFound("no such file for this key", param="file_id", code="file_not_found")
