"""The content domain's one entry point (``ContentService``): what routes read about app labels, FAQ, announcements.

The routes only read; the writes (an operator's: app labels, announcements, FAQ entries) each run in one
unit of work. Texts stay as stored
(``{"en": ..., "fr": ...}``); the routes pick the language (``services/content.localize``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..db import Database
from ..uow import Work
from . import store
from .store import FaqRows, FaqStyle


class ContentService:
    def __init__(self, db: Database, work: Work) -> None:
        self.db = db
        self.work = work

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

    # operators' writes -----------------------------------------------------------------

    async def create_app_label(
        self, name: str, label_name: str, *, organization_id: int | None = None,
        android_store_url: str | None = None, ios_store_url: str | None = None,
    ) -> int:
        """An app (its ``app_label`` name in requests); routes learn its id at first use."""
        return await self.work.run(lambda uow: store.create_app_label(
            uow.conn, name, label_name, organization_id=organization_id, android_store_url=android_store_url,
            ios_store_url=ios_store_url,
        ))

    async def create_announcement(
        self, texts: dict[str, str], *, app_label_id: int | None = None, starts_at: datetime,
        ends_at: datetime | None = None,
    ) -> int:
        """An announcement for one app (or every app: ``app_label_id`` None), shown from ``starts_at``."""
        return await self.work.run(lambda uow: store.create_announcement(
            uow.conn, texts, app_label_id=app_label_id, starts_at=starts_at, ends_at=ends_at,
        ))

    async def create_faq_category(
        self, key: str, names: dict[str, str], *, app_label_id: int | None = None, sort_order: int = 0
    ) -> None:
        await self.work.run(lambda uow: store.create_faq_category(
            uow.conn, key, names, app_label_id=app_label_id, sort_order=sort_order,
        ))

    async def create_faq_sub_category(
        self, key: str, category_key: str, names: dict[str, str], *, sort_order: int = 0, is_spacer: bool = False,
        replacements: list[str] | None = None,
    ) -> None:
        await self.work.run(lambda uow: store.create_faq_sub_category(
            uow.conn, key, category_key, names, sort_order=sort_order, is_spacer=is_spacer,
            replacements=replacements or [],
        ))

    async def create_faq_content(
        self, key: str, sub_category_key: str, contents: dict[str, str], *, sort_order: int = 0,
        style: FaqStyle | None = None,
    ) -> None:
        await self.work.run(lambda uow: store.create_faq_content(
            uow.conn, key, sub_category_key, contents, sort_order=sort_order, style=style or FaqStyle(),
        ))
