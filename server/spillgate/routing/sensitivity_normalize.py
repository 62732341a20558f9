"""Normalization before matching: every way a value can be written, read back to plain text.

The rules match ASCII shapes ("4111 1111 1111 1111", "a@b.com"). A client (or a careless
copy-paste) writes the same values in forms those shapes miss; `views(text)` returns the text
as the rules should read it, plus one decoded copy per encoding found in it:

- Unicode NFKC (full-width digits and at signs become ASCII), format characters stripped
  (zero-width space/joiners, soft hyphen, BOM), every Unicode space folded to " " and every
  dash to "-" (the card rule accepts two separators between digits: "4111  1111");
- percent-encoding ("%40"), HTML entities ("&#64;", "&commat;") and JSON escapes ("\\u0040");
- base64 runs that decode to text (each run of >= 12 base64 characters is tried; binary
  results are ignored here: binary *payloads* are the walker's business).

Decoded copies are normalized again, to a fixed small depth, so "base64 of a percent-encoded
email" is read too. Everything is linear in the text: `str.translate`, `unicodedata`, and
regexes without nested quantifiers.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import sys
import unicodedata
from functools import cache
from urllib.parse import unquote

MAX_DEPTH = 2
FOLD_SLICE = 8192
# A base64 run: at least 12 characters (9 bytes: the shortest email or phone number) of the
# standard or URL-safe alphabet (padding is optional to the decoder).
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")
_B64_MASK = bytes(ord("a") if i in _B64_ALPHABET else ord(" ") for i in range(256))
_B64_SEED = b"a" * 12
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# Any run of backslashes: "\\u0040" is "\u0040" escaped once more (an escape typed inside a JSON
# string, e.g. tool arguments): fail closed and read it as the character too.
_JSON_ESCAPE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@cache
def _fold_table() -> dict[int, str | None]:
    """Format characters → removed; Unicode spaces → " "; Unicode dashes → "-".

    Built once (a pass over every code point, ~0.3 s) when the detector is constructed."""
    table: dict[int, str | None] = {}
    for code in range(0x80, sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category == "Cf":
            table[code] = None
        elif category in ("Zs", "Zl", "Zp"):
            table[code] = " "
        elif category == "Pd":
            table[code] = "-"
    for code in (0x2212, 0x2043, 0xFE63, 0xFF0D):  # minus sign, hyphen bullet, small/wide dash
        table[code] = "-"
    return table


@cache
def _fold_chars() -> re.Pattern[str]:
    """A character class of every code point `_fold_table` changes: finding the few such
    characters with one regex is far cheaper than a dict lookup per character."""
    codes = sorted(_fold_table())
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    body = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return re.compile(f"[{body}]")


def _fold_slice(text: str) -> str:
    if not unicodedata.is_normalized("NFKC", text):  # the check is ~100x cheaper
        text = unicodedata.normalize("NFKC", text)
    table = _fold_table()
    for char in set(_fold_chars().findall(text)):  # a few distinct ones: C-speed replaces
        text = text.replace(char, table[ord(char)] or "")
    return text


def warm() -> None:
    """Build the fold table now (start-up), not on the first non-ASCII request."""
    _fold_chars()


def fold(text: str) -> str:
    """NFKC, strip format characters, fold spaces and dashes.

    Long non-ASCII text is folded in slices: one `translate` over a megabyte is a single C
    call that holds the GIL for ~0.2 s, and the event loop (scanning runs in a worker thread
    for large bodies) must get its turn."""
    if not text.isascii():
        text = "".join(_fold_slice(text[i : i + FOLD_SLICE])
                       for i in range(0, len(text), FOLD_SLICE))
    return text


def views(text: str) -> list[str]:
    """`text` folded, then each decoded form of it (folded too); duplicates left out."""
    out: list[str] = []
    _collect(text, 0, out)
    return out


def _collect(text: str, depth: int, out: list[str]) -> None:
    folded = fold(text)
    if folded in out:
        return
    out.append(folded)
    if depth >= MAX_DEPTH:
        return
    for decoded in _decodings(folded):
        if decoded != folded:
            _collect(decoded, depth + 1, out)


def _decodings(text: str) -> list[str]:
    """One copy with every character-level escape decoded, plus one per base64 text run."""
    unescaped = text
    if "%" in unescaped and _PERCENT_ESCAPE.search(unescaped):  # "12%" alone: no copy
        unescaped = unquote(unescaped, errors="replace")
    if "&" in unescaped:
        unescaped = html.unescape(unescaped)
    if "\\u" in unescaped:
        unescaped = _JSON_ESCAPE.sub(_unescape_json, unescaped)
    return [unescaped, *_base64_texts(text)]


def _unescape_json(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def _base64_texts(text: str) -> list[str]:
    """Text decoded from each base64 run; runs that decode to binary are skipped.

    Runs are found on the UTF-8 bytes through a 256-entry translation table (base64 alphabet
    → "a", anything else → " ") and `bytes.find`: both C loops, where a regex would try every
    position of every long word of the text."""
    raw = text.encode("utf-8", "surrogatepass")
    mask = raw.translate(_B64_MASK)
    found: list[str] = []
    start = mask.find(_B64_SEED)
    while start != -1:
        end = mask.find(b" ", start)
        end = len(mask) if end == -1 else end
        decoded = decode_base64_text(raw[start:end].decode("ascii"))
        if decoded is not None:
            found.append(decoded)
        start = mask.find(_B64_SEED, end)
    return found


def decode_base64_text(run: str) -> str | None:
    """The UTF-8 text a base64 run encodes, or None if it is not base64 of printable text."""
    stripped = run.rstrip("=")
    if len(stripped) % 4 == 1:
        return None
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if is_text(decoded) else None


def is_text(decoded: str) -> bool:
    """Text: no control characters other than tab and newlines (Unicode spaces, format
    characters and the rest are text a person could have written)."""
    return decoded.isprintable() or _CONTROL.search(decoded) is None
