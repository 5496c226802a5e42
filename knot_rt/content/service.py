"""The content domain's one entry point (``ContentService``): what routes read about app labels, FAQ, announcements.

Everything here is a read: no unit of work. Texts stay as stored
(``{"en": ..., "fr": ...}``); the routes pick the language (``services/content.localize``).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..db import Database
from . import store
from .store import FaqRows


class ContentService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def app_label_id(self, name: str) -> int:
        """The id of the app label ``name``; 404 code 12 when there is none."""
        found = await self.db.run(lambda conn: store.app_label_id(conn, name))
        assert found is not None  # store.app_label_id raises for an unknown name
        return found

    async def store_urls(self, label_name: str) -> asyncpg.Record:
        return await self.db.run(lambda conn: store.store_urls(conn, label_name))

    async def faq(self, label_name: str | None) -> FaqRows:
        async def read(conn: asyncpg.Connection) -> FaqRows:
            return await store.faq_rows(conn, await store.app_label_id(conn, label_name))

        return await self.db.run(read)

    async def announcement(self, label_name: str) -> dict[str, Any] | None:
        async def read(conn: asyncpg.Connection) -> dict[str, Any] | None:
            return await store.ongoing_announcement(conn, await store.app_label_id(conn, label_name))

        return await self.db.run(read)
