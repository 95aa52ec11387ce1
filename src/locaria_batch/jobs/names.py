"""One rule, shared by the loader and the exporters, for making a name unique among those taken:
`stem`, then `stem_2`, `stem_3` ..., the stem cut so the name still fits its format's limit
(PostgreSQL identifiers: 63 bytes; dBASE fields: 10 characters; Excel sheets: 31 characters)."""

from __future__ import annotations


def unique_name(stem: str, taken: set[str], *, max_length: int | None = None, utf8_bytes: bool = False,
                separator: str = "_", fold_case: bool = False, trim: str = "") -> str:
    """The first of stem, stem{separator}2, stem{separator}3 ... not in `taken`; it is added to `taken`.

    max_length: the longest name allowed, in characters, or in UTF-8 bytes with utf8_bytes (a cut
    never splits a character). fold_case: names differing only in case collide; `taken` then holds
    lower-cased names. trim: characters a stem may not end with (removed after a cut).
    """
    key = str.lower if fold_case else str
    candidate = _fit(stem, max_length, utf8_bytes, trim)
    number = 1
    while key(candidate) in taken:
        number += 1
        suffix = f"{separator}{number}"
        room = None if max_length is None else max_length - _length(suffix, utf8_bytes)
        candidate = _fit(stem, room, utf8_bytes, trim) + suffix
    taken.add(key(candidate))
    return candidate


def _length(text: str, utf8_bytes: bool) -> int:
    return len(text.encode("utf-8")) if utf8_bytes else len(text)


def _fit(text: str, limit: int | None, utf8_bytes: bool, trim: str) -> str:
    """`text` cut to `limit` characters or bytes, then stripped of `trim` at its end."""
    if limit is not None and utf8_bytes:
        text = text.encode("utf-8")[: max(limit, 0)].decode("utf-8", "ignore")
    elif limit is not None:
        text = text[: max(limit, 0)]
    return text.rstrip(trim) if trim else text
