"""Guards of a semantic hit: facts that similar-looking questions must share. Pure.

Embeddings place "Is X safe?" and "Is X not safe?", or "convert 5 km" and "convert 50 km",
almost on top of each other (cosine 0.9+), so a similarity above the threshold is only a
candidate. It becomes a hit when both texts also agree on:

- numbers (digits, with separators folded, and number words);
- negation (not, never, no, n't, without …, counted);
- named things: capitalised words inside a sentence and quoted strings, each of which must
  occur in the other text (case-insensitive, so "python" still matches "Python");
- units and currencies (km, kg, °C, %, $, USD …);
- opposites and exclusive words (largest/smallest, install/remove, good/bad, winter/summer
  …) and what the question asks (when vs why vs who vs how many): docs/cache-eval.md shows
  these pairs above every workable threshold without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_APOSTROPHE = "\u2019"  # typographic apostrophe, folded to '
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*|\d[\d,._]*\d|\d|[$€£¥%°]")
_QUOTED = re.compile(r"\"([^\"]{1,80})\"|“([^”]{1,80})”|'([^']{2,80})'")
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")
NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
    "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "half": "0.5", "once": "1x", "twice": "2x", "double": "2x", "triple": "3x",
}  # fmt: skip
NEGATIONS = {
    "not": "not", "no": "not", "never": "not", "n't": "not", "cannot": "not",
    "without": "without", "none": "not", "nobody": "not", "nothing": "not", "nor": "not",
    "neither": "not", "isnt": "not", "dont": "not", "doesnt": "not", "cant": "not",
    "wont": "not", "shouldnt": "not", "arent": "not", "wasnt": "not", "didnt": "not",
    "except": "without", "excluding": "without",
}  # fmt: skip
UNITS = {
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mi", "miles": "mi", "mi": "mi", "m": "m", "meter": "m", "meters": "m",
    "metre": "m", "metres": "m", "cm": "cm", "mm": "mm", "inch": "in", "inches": "in",
    "foot": "ft", "feet": "ft", "ft": "ft", "kg": "kg", "kilogram": "kg", "kilograms": "kg",
    "g": "g", "gram": "g", "grams": "g", "lb": "lb", "lbs": "lb", "pound": "lb",
    "pounds": "lb", "oz": "oz", "ounce": "oz", "ounces": "oz", "l": "l", "liter": "l",
    "liters": "l", "litre": "l", "litres": "l", "ml": "ml", "gallon": "gal", "gallons": "gal",
    "celsius": "c", "°": "deg", "fahrenheit": "f", "kelvin": "k", "%": "%", "percent": "%",
    "$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd", "€": "eur", "eur": "eur",
    "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "¥": "jpy", "yen": "jpy",
    "second": "s", "seconds": "s", "sec": "s", "minute": "min", "minutes": "min",
    "hour": "h", "hours": "h", "day": "d", "days": "d", "week": "wk", "weeks": "wk",
    "month": "mo", "months": "mo", "year": "y", "years": "y", "kb": "kb", "mb": "mb",
    "gb": "gb", "tb": "tb", "byte": "b", "bytes": "b", "bit": "bit", "bits": "bit",
    "mph": "mph", "kmh": "kmh", "watt": "w", "watts": "w", "kw": "kw", "kwh": "kwh",
}  # fmt: skip
_OPPOSITES = [
    ("largest", "smallest"), ("biggest", "smallest"), ("maximum", "minimum"),
    ("max", "min"), ("highest", "lowest"), ("most", "least"), ("more", "less"),
    ("before", "after"), ("increase", "decrease"), ("add", "remove"), ("start", "stop"),
    ("open", "close"), ("enable", "disable"), ("encrypt", "decrypt"), ("buy", "sell"),
    ("import", "export"), ("upload", "download"), ("push", "pull"), ("ascending", "descending"),
    ("faster", "slower"), ("fastest", "slowest"), ("advantages", "disadvantages"),
    ("pros", "cons"), ("true", "false"), ("best", "worst"), ("above", "below"),
    ("north", "south"), ("east", "west"), ("left", "right"), ("first", "last"),
    ("long", "short"), ("longest", "shortest"), ("old", "new"), ("oldest", "newest"),
    ("win", "lose"), ("input", "output"), ("private", "public"), ("sync", "async"),
    ("synchronous", "asynchronous"), ("lowercase", "uppercase"), ("encode", "decode"),
    ("serialize", "deserialize"), ("compress", "decompress"), ("install", "uninstall"),
    ("install", "remove"), ("create", "delete"), ("add", "delete"), ("merge", "split"),
    ("rise", "fall"), ("up", "down"), ("hot", "cold"), ("warm", "cold"), ("min", "max"),
]  # fmt: skip
# Words of one kind that exclude each other: one text naming one and the other another.
_EXCLUSIVE = {
    "polarity": {"good": "+", "healthy": "+", "safe": "+", "beneficial": "+", "fine": "+",
                 "allowed": "+", "ok": "+", "okay": "+", "bad": "-", "harmful": "-",
                 "unsafe": "-", "dangerous": "-", "toxic": "-", "poisonous": "-",
                 "unhealthy": "-", "forbidden": "-", "deadly": "-"},
    "season": {w: w for w in ("winter", "summer", "spring", "autumn")},
    "meal": {w: w for w in ("breakfast", "lunch", "dinner")},
    "time": {w: w for w in ("morning", "afternoon", "evening", "night")},
    "color": {w: w for w in ("red", "green", "blue", "yellow", "black", "white", "orange",
                             "purple", "pink", "brown", "grey", "gray")},
}  # fmt: skip
_MARKS: dict[str, set[tuple[str, str]]] = {}
for _i, (_a, _b) in enumerate(_OPPOSITES):
    _MARKS.setdefault(_a, set()).add((f"opposite{_i}", _a))
    _MARKS.setdefault(_b, set()).add((f"opposite{_i}", _b))
for _group, _table in _EXCLUSIVE.items():
    for _word, _value in _table.items():
        _MARKS.setdefault(_word, set()).add((_group, _value))
# What a question asks for, from its first question word: "when" and "why" of one event are
# different questions with nearly the same words.
_ASKS = [
    ("quantity", re.compile(r"\bhow (many|much|large|big|far|long|old|tall|heavy|cold|hot)\b")),
    ("time", re.compile(r"\b(when|what (year|date|time|day|month))\b")),
    ("reason", re.compile(r"\b(why|what (caused|causes|were the causes|is the reason))\b")),
    ("person", re.compile(r"\b(who|whom|whose)\b")),
    ("place", re.compile(r"\b(where)\b")),
    ("manner", re.compile(r"\bhow (do|does|did|can|could|should|to|would)\b")),
]
# Spelled-out units count only after a number or in a conversion ("5 miles", "in miles"):
# "what year", "a day trip" are not quantities. Symbols and abbreviations always count.
_UNIT_CONTEXT = frozenset({"in", "to", "into", "per", "of", "many", "much"})
# Words that start questions or are capitalised for grammar, not because they name a thing.
_NOT_NAMES = frozenset(re.findall(r"\S+", """i a an the what how why when where which who
whom whose is are can could should would will do does did please tell explain give list write
show find describe compare in on of for to and or but if my your it its this that these those
thanks thank please hi hello hey ok okay yes no"""))
_ABBREVIATIONS = frozenset({"km", "mi", "cm", "mm", "ft", "kg", "lb", "lbs", "oz", "ml", "°",
                            "%", "$", "€", "£", "¥", "usd", "eur", "gbp", "kb", "mb", "gb",
                            "tb", "mph", "kmh", "kw", "kwh"})


@dataclass(frozen=True, slots=True)
class Facts:
    """What two texts must agree on for a semantic hit."""

    numbers: tuple[str, ...]
    negations: tuple[str, ...]
    names: frozenset[str]
    units: frozenset[str]
    words: frozenset[str]  # every word, lower case (names are looked up here)
    marks: frozenset[tuple[str, str]]  # (kind, value): opposites, polarity, what is asked


def facts_of(text: str) -> Facts:
    numbers: list[str] = []
    negations: list[str] = []
    units: set[str] = set()
    words: set[str] = set()
    marks: set[tuple[str, str]] = set()
    names = {q.lower() for groups in _QUOTED.findall(text) for q in groups if q}
    previous = ""
    for match in _WORD.finditer(text):
        token = match.group()
        lower = token.lower().replace(_APOSTROPHE, "'")
        if token[0].isdigit():
            numbers.append(_number(token))
            previous = "#"
            continue
        if lower.endswith("n't"):
            negations.append("not")
            lower = lower[:-3]
        words.add(lower)
        if lower in NUMBER_WORDS:
            numbers.append(NUMBER_WORDS[lower])
        if lower in NEGATIONS:
            negations.append(NEGATIONS[lower])
        if lower in UNITS and (lower in _ABBREVIATIONS or previous == "#"
                               or previous in NUMBER_WORDS or previous in _UNIT_CONTEXT):
            units.add(UNITS[lower])
        marks |= _MARKS.get(lower, set())
        if token[0].isupper() and lower not in _NOT_NAMES and not _starts_sentence(
                text, match.start()):
            names.add(lower)
        previous = lower
    marks |= _asks(text.lower())
    return Facts(tuple(sorted(numbers)), tuple(sorted(negations)), frozenset(names),
                 frozenset(units), frozenset(words), frozenset(marks))


def agree(a: Facts, b: Facts) -> bool:
    """True when no guard tells the two texts apart."""
    return disagreement(a, b) is None


def disagreement(a: Facts, b: Facts) -> str | None:
    """The first guard that tells the two texts apart (numbers, negation, units, names,
    opposites — what is asked included), None when none does."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.units != b.units:
        return "units"
    if not _names_shared(a, b):
        return "names"
    if _opposed(a, b):
        return "opposites"
    return None


def _names_shared(a: Facts, b: Facts) -> bool:
    return all(_mentions(b, n) for n in a.names) and all(_mentions(a, n) for n in b.names)


def _mentions(facts: Facts, name: str) -> bool:
    return name in facts.names or all(part in facts.words for part in name.split())


def _opposed(a: Facts, b: Facts) -> bool:
    """One text has a mark (an opposite, a polarity, a season, what is asked) whose kind
    the other text marks differently; or a word only the other has with `un`/`dis`."""
    only_a, only_b = a.marks - b.marks, b.marks - a.marks
    kinds_b = {kind for kind, _ in only_b}
    if any(kind in kinds_b for kind, _ in only_a):
        return True
    words_a, words_b = a.words - b.words, b.words - a.words
    return any(f"un{w}" in words_b or f"dis{w}" in words_b or f"in{w}" in words_b
               or (w.startswith(("un", "dis", "in")) and _unprefixed(w) in words_b)
               for w in words_a)


def _unprefixed(word: str) -> str:
    for prefix in ("un", "dis", "in"):
        if word.startswith(prefix):
            return word[len(prefix):]
    return word


def _asks(text: str) -> set[tuple[str, str]]:
    """What the first question word asks for (none when it is a bare what/which)."""
    found = [(m.start(), kind) for kind, pattern in _ASKS if (m := pattern.search(text))]
    return {("asks", min(found)[1])} if found else set()


def _number(token: str) -> str:
    """`1,000` and `1000` agree; `3.50` and `3.5` agree."""
    digits = token.replace(",", "").replace("_", "").rstrip(".")
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".") or "0"
    return digits.lstrip("0") or "0"


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'(“")
    return not before or bool(_SENTENCE_END.search(before))
