"""The mails of the account routes: their text (English, French) and their links.

Every link starts with ``settings.public_url``; a token travels as
``?token=XXXXXXXXXX``. Every mail ends with a footer carrying an unsubscribe
link (a purpose token valid one year).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import asyncpg

from ..services.mail import enqueue
from ..services.tokens import PURPOSE_UNSUBSCRIBE, TokenSigner
from .store import Account

CONFIRM_PATH = "/email/confirm"
EMAIL_CHANGE_PATH = "/email/change"
PASSWORD_RESET_PATH = "/password/reset"
UNSUBSCRIBE_PATH = "/unsubscribe"
UNSUBSCRIBE_SECONDS = 365 * 86400
DEFAULT_BRAND = "Knot"

_TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "confirm": (
            "Confirm your email address for {brand}",
            "Hello,\n\nWelcome to {brand}! To confirm your email address, open this link:\n\n{link}\n\n"
            "The link works once and expires in {hours} hours. "
            "If you did not create an account, ignore this email.\n",
        ),
        "email_change": (
            "Confirm your new email address for {brand}",
            "Hello,\n\nYou asked to use {new_email} as the email address of your {brand} account. "
            "To confirm the change, open this link:\n\n{link}\n\n"
            "The link works once and expires in {hours} hours. "
            "If you did not ask for this change, ignore this email.\n",
        ),
        "email_changed": (
            "The email address of your {brand} account changed",
            "Hello,\n\nThe email address of your {brand} account is now {new_email}; "
            "this address no longer receives its mail.\n\n"
            "If you did not make this change, contact our support at once.\n",
        ),
        "password_reset": (
            "Reset your {brand} password",
            "Hello,\n\nSomeone asked to reset the password of your {brand} account. "
            "To choose a new password, open this link:\n\n{link}\n\n"
            "The link works once and expires in {hours} hours. Setting a new password logs out every device. "
            "If you did not ask for this, ignore this email: your password stays the same.\n",
        ),
    },
    "fr": {
        "confirm": (
            "Confirmez votre adresse email pour {brand}",
            "Bonjour,\n\nBienvenue sur {brand} ! Pour confirmer votre adresse email, ouvrez ce lien :\n\n{link}\n\n"
            "Le lien ne sert qu'une fois et expire dans {hours} heures. "
            "Si vous n'avez pas créé de compte, ignorez cet email.\n",
        ),
        "email_change": (
            "Confirmez votre nouvelle adresse email pour {brand}",
            "Bonjour,\n\nVous avez demandé à utiliser {new_email} comme adresse email de votre compte {brand}. "
            "Pour confirmer le changement, ouvrez ce lien :\n\n{link}\n\n"
            "Le lien ne sert qu'une fois et expire dans {hours} heures. "
            "Si vous n'avez rien demandé, ignorez cet email.\n",
        ),
        "email_changed": (
            "L'adresse email de votre compte {brand} a changé",
            "Bonjour,\n\nL'adresse email de votre compte {brand} est désormais {new_email} ; "
            "cette adresse-ci ne reçoit plus ses emails.\n\n"
            "Si vous n'êtes pas à l'origine de ce changement, contactez tout de suite notre support.\n",
        ),
        "password_reset": (
            "Réinitialisez votre mot de passe {brand}",
            "Bonjour,\n\nQuelqu'un a demandé à réinitialiser le mot de passe de votre compte {brand}. "
            "Pour choisir un nouveau mot de passe, ouvrez ce lien :\n\n{link}\n\n"
            "Le lien ne sert qu'une fois et expire dans {hours} heures. "
            "Un nouveau mot de passe déconnecte tous les appareils. "
            "Si vous n'avez rien demandé, ignorez cet email : votre mot de passe reste le même.\n",
        ),
    },
}

_FOOTERS: dict[str, str] = {
    "en": "\n--\nYou receive this email because you have a {brand} account.\n"
    "To stop receiving our news, open: {unsubscribe}\n",
    "fr": "\n--\nVous recevez cet email car vous avez un compte {brand}.\n"
    "Pour ne plus recevoir nos nouvelles, ouvrez : {unsubscribe}\n",
}


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str

    async def post(self, conn: asyncpg.Connection) -> int:
        """Write the mail into the outbox (inside the transaction of the change)."""
        return await enqueue(conn, self.to, self.subject, self.body)


class Notifications:
    """Writes each mail for one account, in the account's language."""

    def __init__(self, public_url: str, signer: TokenSigner, *, token_hours: int) -> None:
        self._base = public_url.rstrip("/")
        self._signer = signer
        self.token_hours = token_hours

    def confirmation(self, account: Account, token: str) -> Mail:
        return self._write("confirm", account, account.email, link=self._link(CONFIRM_PATH, token))

    def email_change(self, account: Account, new_email: str, token: str) -> Mail:
        """Sent to the new address, with the link that proves the user reads it."""
        link = self._link(EMAIL_CHANGE_PATH, token)
        return self._write("email_change", account, new_email, link=link, new_email=new_email)

    def email_changed(self, account: Account, new_email: str) -> Mail:
        """Sent to the old address once the change is done."""
        return self._write("email_changed", account, account.email, new_email=new_email)

    def password_reset(self, account: Account, token: str) -> Mail:
        return self._write("password_reset", account, account.email, link=self._link(PASSWORD_RESET_PATH, token))

    def _link(self, path: str, token: str) -> str:
        return f"{self._base}{path}?{urlencode({'token': token})}"

    def _write(self, kind: str, account: Account, to: str, **fields: str) -> Mail:
        lang = account.lang.lower() if account.lang.lower() in _TEXTS else "en"
        unsubscribe = self._signer.purpose_token(PURPOSE_UNSUBSCRIBE, account.user_id, UNSUBSCRIBE_SECONDS)
        values = {
            "brand": account.label_name or DEFAULT_BRAND,
            "hours": str(self.token_hours),
            "unsubscribe": self._link(UNSUBSCRIBE_PATH, unsubscribe),
            **fields,
        }
        subject, body = _TEXTS[lang][kind]
        return Mail(to=to, subject=subject.format(**values), body=(body + _FOOTERS[lang]).format(**values))
