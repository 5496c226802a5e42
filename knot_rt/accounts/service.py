"""The accounts domain's one entry point: ``AccountService``.

The routes (``api/users.py``, ``api/login.py``, ``api/consents.py``), the feed's
token check (``web/auth.authenticate``) and the CLI (``knot-rt user create``)
call it; nothing else reaches the accounts' tables.

Every write opens one unit of work (``Work.run``) and queues there what must
happen once it committed: the mail sender is woken for a mail written to the
outbox (``uow.after(mail.wake)``), the feed sockets of revoked sessions close
(``uow.after(lambda: hub.sessions_revoked(ids))``). A rollback runs none of it.

Choices:

- The HTTP-only guards stay in the routes and the access policy (``web/auth.py``):
  the rate limiter (keyed by the client address, which only a request knows) and
  re-authentication before a sensitive change. The service is called after them,
  so their order against hashing and the database is the one issue 7 set.
- The answers are domain values (``Account``, a session as the login routes
  answer it, ``TotpSetup``); the routes shape them into the contract's models.
- A second-factor check under the wrong-code lock (``guarded``) is several units
  of work on purpose: the attempt is claimed and committed before the code is
  checked, so concurrent guesses cannot slip past the count.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg

from protocols.errors import ErrorCode

from ..bus import FeedHub
from ..config import Settings
from ..content import store as content_store
from ..db import Database
from ..errors import ApiError
from ..services.access import AccessCache
from ..services.mail import MailSender
from ..services.passwords import Passwords
from ..services.permissions import grant, load_permissions, revoke
from ..services.secrets import SecretBox
from ..services.social import SocialIdentity
from ..services.tokens import PURPOSE_CONFIRM, PURPOSE_MFA, PURPOSE_UNSUBSCRIBE, TokenSigner
from ..uow import UnitOfWork, Work
from . import store
from .notifications import Mail, Notifications
from .sessions import SessionCache
from .store import ACCOUNT_CHANGES, Account, Credentials, Device, Purpose
from .totp import Step, TotpSetup, locked_error

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIRM_TOKEN_SECONDS = 24 * 3600
MFA_TOKEN_SECONDS = 5 * 60


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the user and the session of a checked access token."""

    user_id: int
    session_id: Any


@dataclass(frozen=True, slots=True)
class LoginIntent:
    """What a login asks for, carried from its first step to its session."""

    scope: str
    app_label_id: int | None
    device: Device


@dataclass(frozen=True, slots=True)
class EmailChange:
    """A pending email change, as its link shows it."""

    account: Account
    new_email: str
    current_organization_name: str | None
    new_organization_name: str | None


async def _account(conn: asyncpg.Connection, user_id: int) -> Account:
    """The account a token names; a token of a deleted account is no longer valid."""
    account = await store.load_account(conn, user_id)
    if account is None:
        raise ApiError(ErrorCode.INVALID_TOKEN, "account not found")
    return account


async def _require_scope(conn: asyncpg.Connection, user_id: int, scope: str) -> None:
    if scope == "dashboard" and not await load_permissions(conn, user_id):
        raise ApiError(ErrorCode.NOT_ALLOWED, "this account has no access to the dashboard")


class AccountService:
    """Accounts, sessions, mailed tokens, the second factor and consents."""

    def __init__(
        self,
        db: Database,
        work: Work,
        *,
        settings: Settings,
        signer: TokenSigner,
        passwords: Passwords,
        box: SecretBox,
        mail: MailSender,
        hub: FeedHub,
        access: AccessCache | None = None,
    ) -> None:
        self.db = db
        self.work = work
        self.signer = signer
        self.passwords = passwords
        self.box = box
        self.mail = mail
        self.hub = hub
        # The users' permissions and access, forgotten here when a write of this service changes them.
        self.access = access if access is not None else AccessCache()
        self.sessions = SessionCache()  # the open sessions known from memory (``authenticate``)
        self.refresh_days = settings.refresh_token_days
        self.letters = Notifications(settings.public_url, signer, token_hours=settings.email_token_hours)

    # -- after-commit effects ----------------------------------------------------------------------

    async def _post(self, uow: UnitOfWork, mail: Mail) -> None:
        """Write ``mail`` to the outbox in this unit of work; the sender wakes once it committed."""
        await mail.post(uow.conn)
        uow.after(self.mail.wake)

    def _close_sockets(self, uow: UnitOfWork, revoked: list[uuid.UUID]) -> None:
        """Once the revocation committed: the sessions leave the cache (their tokens are refused from then
        on), then their feed sockets close. Every revocation of this process goes through here."""
        uow.after(lambda: self.sessions_revoked(revoked))

    def _forget_access(self, uow: UnitOfWork, user_id: int | None) -> None:
        """Once committed, the access of ``user_id`` (None: of everyone) is read again on its next use."""
        uow.after(self.access.forget_all if user_id is None else lambda: self.access.forget(user_id))

    def sessions_revoked(self, session_ids: list[uuid.UUID]) -> None:
        """Sessions revoked (here once committed, or by another process): their access tokens are refused
        from now on, and their feed sockets in this process close."""
        self.sessions.drop(session_ids)
        self.hub.sessions_revoked(session_ids)

    def forget_sessions(self) -> None:
        """Forget every session known from memory (revocations may have been missed): each is read again
        on its next use."""
        self.sessions.clear()

    # -- who is calling ----------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Caller:
        """Check an access token and that its session is still open (HTTP and the feed alike)."""
        claims = self.signer.read_access(token)
        user_id = self.sessions.get(claims.session_id)
        if user_id is None:
            generation = self.sessions.generation
            user_id = await self.db.run(lambda conn: store.active_session_user(conn, claims.session_id))
            if user_id is not None:
                self.sessions.put(claims.session_id, user_id, generation)
        if user_id is None or user_id != claims.user_id:
            raise ApiError(ErrorCode.INVALID_TOKEN, "session ended")
        return Caller(claims.user_id, claims.session_id)

    async def account(self, user_id: int) -> Account:
        """The account of a token; 401 code 3 when it no longer exists."""
        return await self.db.run(lambda conn: _account(conn, user_id))

    async def credentials(self, user_id: int, session_id: object, recent: timedelta) -> Credentials | None:
        """What re-authenticating the caller checks (``web/auth.confirm_identity``)."""
        return await self.db.run(lambda conn: store.load_credentials(conn, user_id, session_id, recent))

    # -- accounts ----------------------------------------------------------------------------------

    async def create_user(
        self,
        email: str,
        password: str,
        *,
        confirmed: bool = True,
        perms: list[tuple[str, bool]] = [],  # noqa: B006 - read only
        networks: list[int] = [],  # noqa: B006
        clusters: list[int] = [],  # noqa: B006
        organizations: list[int] = [],  # noqa: B006
        app_label: int | None = None,
    ) -> int:
        """An account made by an operator (the CLI) or a test: no mail, permissions on the given units."""
        password_hash = await self.passwords.hash(password)

        async def change(uow: UnitOfWork) -> int:
            user_id = await store.insert_user(
                uow.conn, email, password_hash, confirmed=confirmed, app_label=app_label
            )
            for key, write in perms:
                await grant(uow.conn, user_id, key, write=write, networks=networks, clusters=clusters,
                            organizations=organizations)
            self._forget_access(uow, user_id)
            return user_id

        return await self.work.run(change)

    async def grant_permission(
        self,
        user_id: int,
        perm_key: str,
        *,
        write: bool,
        networks: list[int] = [],  # noqa: B006 - read only
        clusters: list[int] = [],  # noqa: B006
        organizations: list[int] = [],  # noqa: B006
    ) -> int:
        """Give an existing user a permission (an operator's write); it counts from the user's next request."""

        async def change(uow: UnitOfWork) -> int:
            self._forget_access(uow, user_id)
            return await grant(uow.conn, user_id, perm_key, write=write, networks=networks, clusters=clusters,
                               organizations=organizations)

        return await self.work.run(change)

    async def revoke_permission(self, user_id: int, perm_key: str) -> int:
        """Take a user's ``perm_key`` permissions (an operator's write); from the user's next request on."""

        async def change(uow: UnitOfWork) -> int:
            self._forget_access(uow, user_id)
            return await revoke(uow.conn, user_id, perm_key)

        return await self.work.run(change)

    async def create_organization(self, name: str, email_domain: str | None = None) -> int:
        """An organization (an operator's write); accounts of ``email_domain`` are its members."""

        async def change(uow: UnitOfWork) -> int:
            self._forget_access(uow, None)  # its members' access changes
            return await store.insert_organization(uow.conn, name, email_domain)

        return await self.work.run(change)

    async def create_consent_type(
        self, key: str, names: dict[str, str], *, default_value: bool = False, sort_order: int = 0
    ) -> None:
        """A kind of consent (an operator's write), offered to every user from now on."""
        await self.work.run(lambda uow: store.insert_consent_type(
            uow.conn, key, names, default_value=default_value, sort_order=sort_order,
        ))

    async def register(self, email: str, password: str, *, app_label: str | None, lang: str) -> int:
        """A new unconfirmed account and its confirmation mail."""
        password_hash = await self.passwords.hash(password)

        async def change(uow: UnitOfWork) -> int:
            label = await content_store.app_label_id(uow.conn, app_label)
            user_id = await store.insert_user(
                uow.conn, email, password_hash, confirmed=False, lang=lang, app_label=label
            )
            await self._mail_confirmation(uow, await _account(uow.conn, user_id))
            return user_id

        return await self.work.run(change)

    async def _mail_confirmation(self, uow: UnitOfWork, account: Account) -> None:
        """A new confirmation token (earlier ones stop working) and the mail that carries it."""
        token = await store.issue_email_token(
            uow.conn, account.user_id, Purpose.CONFIRM, hours=self.letters.token_hours
        )
        await self._post(uow, self.letters.confirmation(account, token))

    async def send_confirmation(self, account: Account) -> None:
        """Mail the confirmation again; 409 code 19 when the address is confirmed already."""
        if account.email_confirmed:
            raise ApiError(ErrorCode.EMAIL_ALREADY_CONFIRMED)
        await self.work.run(lambda uow: self._mail_confirmation(uow, account))

    async def confirm_email(self, token: str) -> Account:
        async def change(uow: UnitOfWork) -> Account:
            found = await store.use_email_token(uow.conn, token, Purpose.CONFIRM)
            await store.mark_email_confirmed(uow.conn, found.user_id)
            return await _account(uow.conn, found.user_id)

        return await self.work.run(change)

    async def ask_email_change(self, user_id: int, new_email: str) -> None:
        """Mail the new address a link that proves the user reads it (the caller re-authenticated)."""
        new_email = store.normalize_email(new_email)

        async def change(uow: UnitOfWork) -> None:
            account = await _account(uow.conn, user_id)
            if store.normalize_email(account.email) == new_email:
                raise ApiError(ErrorCode.SAME_EMAIL)
            if await store.find_user_by_email(uow.conn, new_email) is not None:
                raise ApiError(ErrorCode.EMAIL_ALREADY_USED)
            token = await store.issue_email_token(
                uow.conn, user_id, Purpose.EMAIL_CHANGE, hours=self.letters.token_hours, new_email=new_email
            )
            await self._post(uow, self.letters.email_change(account, new_email, token))

        await self.work.run(change)

    async def email_change(self, token: str) -> EmailChange:
        """What an email-change link would do, leaving it unused."""

        async def read(conn: asyncpg.Connection) -> EmailChange:
            found = await store.peek_email_token(conn, token, Purpose.EMAIL_CHANGE)
            account = await _account(conn, found.user_id)
            new_email = found.new_email or ""
            return EmailChange(
                account=account,
                new_email=new_email,
                current_organization_name=await store.organization_name(conn, account.email),
                new_organization_name=await store.organization_name(conn, new_email),
            )

        return await self.db.run(read)

    async def change_email(self, token: str, email: str) -> None:
        """Spend an email-change link: the account takes the new address; the old one gets a notice."""

        async def change(uow: UnitOfWork) -> None:
            found = await store.use_email_token(
                uow.conn, token, Purpose.EMAIL_CHANGE, new_email=store.normalize_email(email)
            )
            old = await _account(uow.conn, found.user_id)
            new_email = found.new_email or ""
            await store.change_email(uow.conn, old.user_id, new_email)
            self._forget_access(uow, old.user_id)  # the organisation goes with the address's domain
            # Links mailed to the old address must not act on the account any more.
            await store.revoke_email_tokens(uow.conn, old.user_id)
            await self._post(uow, self.letters.email_changed(old, new_email))

        await self.work.run(change)

    async def ask_password_reset(self, email: str, app_label: str) -> None:
        """Mail a reset link when the account exists; the same outcome either way."""

        async def change(uow: UnitOfWork) -> None:
            await content_store.app_label_id(uow.conn, app_label)
            account = await store.account_by_email(uow.conn, email)
            if account is not None:
                token = await store.issue_email_token(
                    uow.conn, account.user_id, Purpose.PASSWORD_RESET, hours=self.letters.token_hours
                )
                await self._post(uow, self.letters.password_reset(account, token))

        await self.work.run(change)

    async def set_new_password(self, token: str, password: str) -> None:
        """Spend a reset link: a new password, every session ends, pending account-changing links and
        2FA set-ups are cancelled."""
        # A cheap look first, so that a wrong token costs no password hashing.
        await self.db.run(lambda conn: store.peek_email_token(conn, token, Purpose.PASSWORD_RESET))
        password_hash = await self.passwords.hash(password)

        async def change(uow: UnitOfWork) -> None:
            found = await store.use_email_token(uow.conn, token, Purpose.PASSWORD_RESET)
            await store.set_password_hash(uow.conn, found.user_id, password_hash)
            await store.revoke_email_tokens(uow.conn, found.user_id, *ACCOUNT_CHANGES)
            await store.cancel_setups(uow.conn, found.user_id)
            self._close_sockets(uow, await store.revoke_sessions(uow.conn, found.user_id))

        await self.work.run(change)

    # -- logins ------------------------------------------------------------------------------------

    async def _open_session(self, conn: asyncpg.Connection, user_id: int, intent: LoginIntent) -> dict[str, Any]:
        await _require_scope(conn, user_id, intent.scope)
        return await store.open_session(
            conn, self.signer, user_id, scope=intent.scope, device=intent.device,
            app_label_id=intent.app_label_id, refresh_days=self.refresh_days,
        )

    async def open_session(self, user_id: int, intent: LoginIntent) -> dict[str, Any]:
        """A session for a user whose credentials were proven elsewhere (tests, tools)."""
        return await self.work.run(lambda uow: self._open_session(uow.conn, user_id, intent))

    async def _admit(self, conn: asyncpg.Connection, proven: asyncpg.Record, intent: LoginIntent) -> dict[str, Any]:
        # The row as it is now: the credentials were proven on an earlier read (a password check may
        # wait in the hashing queue), and the account may have changed since (deleted, a new password,
        # 2FA turned on). What was proven must still hold; what is decided reads the current row.
        user = await store.lock_user(conn, int(proven["id"]))
        if user is None or user["password_hash"] != proven["password_hash"]:
            raise ApiError(ErrorCode.WRONG_CREDENTIALS)
        user_id = int(user["id"])
        if user["email_confirmed_at"] is None:
            token = self.signer.purpose_token(PURPOSE_CONFIRM, user_id, CONFIRM_TOKEN_SECONDS)
            raise ApiError(ErrorCode.EMAIL_NOT_CONFIRMED, token=token)
        if user["totp_secret"] is not None:
            await _require_scope(conn, user_id, intent.scope)
            token = self.signer.purpose_token(
                PURPOSE_MFA, user_id, MFA_TOKEN_SECONDS,
                scope=intent.scope, app_label_id=intent.app_label_id, totp_step=int(user["totp_last_step"]),
            )
            raise ApiError(ErrorCode.TWO_FACTOR_REQUIRED, token=token)
        return await self._open_session(conn, user_id, intent)

    async def admit(self, user: asyncpg.Record, intent: LoginIntent) -> dict[str, Any]:
        """What a login with proven credentials gets.

        An unconfirmed address answers code 7 with a token that only resends the
        confirmation; the dashboard scope needs at least one permission (13); an
        account with 2FA answers code 146 with a five-minute token for the second
        step; otherwise a session opens.
        """
        return await self.work.run(lambda uow: self._admit(uow.conn, user, intent))

    async def password_login(
        self, email: str, password: str, *, app_label: str, scope: str, device: Device
    ) -> dict[str, Any]:
        """A login with email and password (the route checked the rate limits first)."""

        async def read(conn: asyncpg.Connection) -> tuple[int | None, asyncpg.Record | None]:
            return await content_store.app_label_id(conn, app_label), await store.find_user_by_email(conn, email)

        label_id, user = await self.db.run(read)
        password_ok = await self.passwords.verify(None if user is None else user["password_hash"], password)
        if user is None or not password_ok:
            raise ApiError(ErrorCode.WRONG_CREDENTIALS)
        return await self.admit(user, LoginIntent(scope, label_id, device))

    async def social_login(
        self, identity: SocialIdentity, *, app_label: str, lang: str, scope: str, device: Device
    ) -> dict[str, Any]:
        """A login with a verified provider identity: its linked account, else the account of its
        verified address, else a new confirmed account without a password."""

        async def change(uow: UnitOfWork) -> tuple[int | None, asyncpg.Record]:
            label_id = await content_store.app_label_id(uow.conn, app_label)
            return label_id, await store.account_for(uow.conn, identity, lang=lang, app_label_id=label_id)

        label_id, user = await self.work.run(change)
        return await self.admit(user, LoginIntent(scope, label_id, device))

    async def second_factor_login(self, user_id: int, code: str, claims: Mapping[str, Any], device: Device) -> dict[
        str, Any
    ]:
        """The second step of a login that answered code 146 (``claims`` of its token)."""
        intent = LoginIntent(str(claims["scope"]), claims.get("app_label_id"), device)
        last_step_seen = int(claims["totp_step"])

        async def check(conn: asyncpg.Connection) -> dict[str, Any] | None:
            # Once any code was accepted since the login asked for this one, that login is spent.
            accepted = await store.spend_code(
                conn, self.box, user_id, code, last_step_seen=last_step_seen, disable=False
            )
            return await self._open_session(conn, user_id, intent) if accepted else None

        return await self.guarded(user_id, Step.CODE, check)

    # -- second factor -----------------------------------------------------------------------------

    async def guarded(
        self, user_id: int, step: Step, check: Callable[[asyncpg.Connection], Awaitable[T | None]]
    ) -> T:
        """Check a code under the lock: ``check`` runs in one unit of work and answers None for a wrong code.

        Every check first claims an attempt in its own committed unit of work. A
        wrong code answers 401 code 15 (or 429 code 9 from the attempt that locks
        the step); a right one clears the count in ``check``'s unit of work; an
        ``ApiError`` from ``check`` gives the attempt back and passes on.
        """
        await self.work.run(lambda uow: store.claim_attempt(uow.conn, user_id, step))

        async def change(uow: UnitOfWork) -> T | None:
            result = await check(uow.conn)
            if result is not None:
                await store.clear_attempts(uow.conn, user_id, step)
            return result

        try:
            result = await self.work.run(change)
        except ApiError:
            # Refused for another reason (a stale set-up, 2FA already off): no code was wrong.
            await self.work.run(lambda uow: store.release_attempt(uow.conn, user_id, step))
            raise
        if result is None:
            if await self.work.run(lambda uow: store.record_failure(uow.conn, user_id, step)):
                raise locked_error()
            raise ApiError(ErrorCode.INVALID_2FA_CODE)
        return result

    async def check_code(self, user_id: int, code: str) -> None:
        """A current code of the account's secret (re-authentication), spent; under the lock."""

        async def check(conn: asyncpg.Connection) -> bool | None:
            return await store.spend_code(conn, self.box, user_id, code, last_step_seen=None, disable=False) or None

        await self.guarded(user_id, Step.CODE, check)

    async def begin_two_factor(self, user_id: int) -> TotpSetup:
        """A new secret for the user's OTP app (the caller re-authenticated)."""
        return await self.work.run(lambda uow: store.begin_setup(uow.conn, self.box, user_id))

    async def finish_two_factor(self, user_id: int, token: str, code: str) -> None:
        """2FA on, with one code of the set-up's secret; wrong codes lock the ``setup`` step."""
        await self.guarded(
            user_id, Step.SETUP, lambda conn: store.finish_setup(conn, self.box, user_id, token, code)
        )

    async def disable_two_factor(self, user_id: int, code: str) -> None:
        """2FA off with a current code; wrong codes count with the login's second step."""

        async def check(conn: asyncpg.Connection) -> bool | None:
            return await store.disable_two_factor(conn, self.box, user_id, code) or None

        await self.guarded(user_id, Step.CODE, check)

    # -- sessions ----------------------------------------------------------------------------------

    async def update_device(self, session_id: uuid.UUID, device: Device) -> None:
        await self.work.run(lambda uow: store.update_device(uow.conn, session_id, device))

    async def refresh(self, presented: str) -> tuple[str, str]:
        """New access and refresh tokens for a refresh token, which is spent.

        A token used twice revokes its whole session (committed, its feed sockets
        closed), then answers 401 code 14.
        """

        async def change(uow: UnitOfWork) -> tuple[str, str] | uuid.UUID:
            rotated = await store.rotate_refresh_token(uow.conn, self.signer, presented, refresh_days=self.refresh_days)
            if isinstance(rotated, uuid.UUID):
                self._close_sockets(uow, [rotated])
            return rotated

        rotated = await self.work.run(change)
        if isinstance(rotated, uuid.UUID):
            raise ApiError(ErrorCode.REFRESH_TOKEN_REUSED)
        return rotated

    async def logout(self, user_id: int, device_id: str | None) -> None:
        """End one device's sessions, or every session (and then the pending account-changing links and
        2FA set-ups too)."""

        async def change(uow: UnitOfWork) -> None:
            if device_id is None:
                await store.revoke_email_tokens(uow.conn, user_id, *ACCOUNT_CHANGES)
                await store.cancel_setups(uow.conn, user_id)
            self._close_sockets(uow, await store.revoke_sessions(uow.conn, user_id, device_id))

        await self.work.run(change)

    # -- consents ----------------------------------------------------------------------------------

    async def consents(self, user_id: int) -> list[asyncpg.Record]:
        """Every consent type with the user's value, else its default."""
        return await self.db.run(lambda conn: store.consent_types(conn, user_id))

    async def update_consents(self, user_id: int, consents: Mapping[str, bool]) -> None:
        """All or nothing: one unknown type changes none (400 code 21)."""
        await self.work.run(lambda uow: store.update_consents(uow.conn, user_id, consents))

    async def unsubscribe(self, token: str, consents: Mapping[str, bool]) -> None:
        """Update the consents of the account an unsubscribe token (from a mail's footer) names."""
        user_id = int(self.signer.read_purpose(token, PURPOSE_UNSUBSCRIBE)["user_id"])

        async def change(uow: UnitOfWork) -> None:
            if not await store.user_exists(uow.conn, user_id):
                raise ApiError(ErrorCode.INVALID_TOKEN, "the account of this token no longer exists")
            await store.update_consents(uow.conn, user_id, consents)

        await self.work.run(change)
