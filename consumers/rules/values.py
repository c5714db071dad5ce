"""Plain field transforms (no lookups): the same value on both sides, in each side's own way.

BC writes empty text as "", Dataverse as null; BC fields have fixed lengths (text:N clamps toward BC).
"""

from __future__ import annotations

from typing import Any

from schemas.mappings import OPTION_MAPS

ITEM_TYPES = OPTION_MAPS["itemtype"]  # BC item type → product type code


def text_toward_dataverse(value: Any) -> Any:
    return None if value in ("", None) else str(value).strip() or None


def text_toward_bc(value: Any, length: int | None) -> str:
    text = "" if value is None else str(value).strip()
    return text[:length] if length else text


def money(value: Any) -> float:
    return round(float(value or 0), 6)


def convert(transform: str | None, toward: str, value: Any) -> Any:
    """Apply a value transform named in a FieldMap (lookups are resolved elsewhere)."""
    kind, _, argument = (transform or "").partition(":")
    if kind == "money":
        return money(value)
    if kind == "nonnegative":
        return max(0.0, money(value))
    if kind == "option" and argument == "itemtype":
        return ITEM_TYPES.get(str(value), 1) if toward == "dataverse" else value
    if toward == "dataverse":
        return text_toward_dataverse(value) if isinstance(value, str) or value is None else value
    if isinstance(value, str) or value is None:
        return text_toward_bc(value, int(argument) if kind == "text" and argument else None)
    return value


def split_name(display_name: str | None) -> tuple[str | None, str | None]:
    """BC's one displayName → Dataverse firstname/lastname: the last word is the last name."""
    words = (display_name or "").split()
    if not words:
        return None, None
    return (" ".join(words[:-1]) or None), words[-1]


def join_name(first: str | None, last: str | None) -> str:
    return " ".join(part.strip() for part in (first, last) if part and part.strip())
