"""Localized texts: consents names, FAQ and announcements are stored as ``{"en": ..., "fr": ...}``.

A text is given in the asked language when it exists there, else in English
(``translated`` tells the app which); English is the language every text has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FALLBACK_LANG = "en"


@dataclass(frozen=True, slots=True)
class Localized:
    text: str
    translated: bool


def localize(texts: Mapping[str, str] | None, lang: str) -> Localized:
    """The text in ``lang``, else the English one, else any; ``translated`` when ``lang`` had it."""
    texts = texts or {}
    wanted = texts.get(lang.lower())
    if wanted:
        return Localized(wanted, True)
    fallback = texts.get(FALLBACK_LANG) or next((text for text in texts.values() if text), "")
    return Localized(fallback, False)
