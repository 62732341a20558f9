"""Labelled question pairs for the semantic cache: paraphrases and hard non-duplicates.

Two generators, with their own templates, slot values and seeds, so the threshold tuned on
one is judged on the other:
- `tuning` (seed 16): facts, conversions, programming how-tos, book authors, safety questions;
- `evaluation` (seed 1601): dates, recipes, time zones, medicines, travel, differences;
- `holdout` (seed 77): written after the guards were settled, run once for the final report.

Kinds of pair (label `duplicate` true only for the first):
- paraphrase: the same question in another wording (another template of the same intent,
  with casing, punctuation and filler changes);
- same_topic: the same subject, another question (capital vs population of one country);
- negation / number / entity / unit / opposite: one wording, one fact swapped.

Usage: python scripts/cache_pairs.py {tuning|evaluation} [--out FILE]   (JSON lines)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Pair = dict[str, object]


@dataclass(frozen=True)
class Intent:
    """One question with several wordings; `{x}` slots filled from `slots`."""

    topic: str
    forms: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    negated: tuple[str, ...] = ()  # wordings that say the opposite (negation pairs)


def _fill(form: str, values: dict[str, str]) -> str:
    return form.format(**values)


NUMBERS = ("2", "3", "5", "7", "10", "12", "15", "20", "25", "50", "100", "250", "1000")
TUNING = [
    Intent("country", ("What is the capital of {country}?", "what's the capital of {country}",
                       "Which city is the capital of {country}?",
                       "Tell me the capital city of {country}.", "capital of {country}?"),
           {"country": ("France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Peru",
                        "Vietnam", "Egypt", "Australia", "Chile", "Poland")}),
    Intent("country", ("What is the population of {country}?",
                       "How many people live in {country}?",
                       "population of {country}?", "How large is the population of {country}?"),
           {"country": ("France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Peru",
                        "Vietnam", "Egypt", "Australia", "Chile", "Poland")}),
    Intent("country", ("What language is spoken in {country}?",
                       "Which language do people speak in {country}?",
                       "what language do they speak in {country}"),
           {"country": ("France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Peru",
                        "Vietnam", "Egypt", "Australia", "Chile", "Poland")}),
    Intent("convert", ("Convert {n} km to miles.", "How many miles is {n} km?",
                       "what is {n} km in miles", "{n} km in miles?"),
           {"n": NUMBERS}),
    Intent("convert", ("Convert {n} kg to pounds.", "How many pounds is {n} kg?",
                       "what is {n} kg in pounds", "{n} kg in pounds?"),
           {"n": NUMBERS}),
    Intent("code", ("How do I sort a list in {lang}?", "How can I sort a list in {lang}?",
                    "how to sort a list in {lang}", "What is the way to sort a list in {lang}?"),
           {"lang": ("Python", "Java", "Rust", "Go", "JavaScript", "Ruby", "Kotlin", "Swift")}),
    Intent("code", ("How do I reverse a list in {lang}?", "How can I reverse a list in {lang}?",
                    "how to reverse a list in {lang}"),
           {"lang": ("Python", "Java", "Rust", "Go", "JavaScript", "Ruby", "Kotlin", "Swift")}),
    Intent("code", ("How do I read a file in {lang}?", "How can I read a file in {lang}?",
                    "how to read a file in {lang}", "What's the way to read a file in {lang}?"),
           {"lang": ("Python", "Java", "Rust", "Go", "JavaScript", "Ruby", "Kotlin", "Swift")}),
    Intent("book", ("Who wrote {book}?", "Who is the author of {book}?",
                    "who wrote the book {book}", "Who was {book} written by?"),
           {"book": ("Dune", "Emma", "Ulysses", "Beloved", "Frankenstein", "Dracula",
                     "Middlemarch", "Rebecca", "Persuasion", "Walden")}),
    Intent("book", ("When was {book} published?", "What year was {book} published?",
                    "when was the book {book} first published"),
           {"book": ("Dune", "Emma", "Ulysses", "Beloved", "Frankenstein", "Dracula",
                     "Middlemarch", "Rebecca", "Persuasion", "Walden")}),
    Intent("safety", ("Is {food} safe for dogs to eat?", "Can dogs safely eat {food}?",
                      "is it safe to give my dog {food}", "Are dogs allowed to eat {food}?"),
           {"food": ("grapes", "chocolate", "apples", "carrots", "cheese", "onions", "bananas",
                     "garlic", "rice", "peanut butter")},
           negated=("Is {food} not safe for dogs to eat?", "Can dogs not safely eat {food}?",
                    "why is it never safe to give my dog {food}")),
    Intent("safety", ("Is {food} good for dogs?", "Is {food} healthy for dogs?",
                      "is {food} good for my dog"),
           {"food": ("grapes", "chocolate", "apples", "carrots", "cheese", "onions", "bananas",
                     "garlic", "rice", "peanut butter")},
           negated=("Is {food} bad for dogs?", "Is {food} not good for dogs?")),
]

EVALUATION = [
    Intent("history", ("In what year did {event} happen?", "When did {event} take place?",
                       "what year was {event}", "When did {event} happen?"),
           {"event": ("the French Revolution", "the Moon landing", "the fall of the Berlin Wall",
                      "the Battle of Hastings", "the Boston Tea Party", "the Meiji Restoration",
                      "the signing of the Magna Carta", "the Chernobyl disaster")}),
    Intent("history", ("Why did {event} happen?", "What caused {event}?",
                       "what were the causes of {event}"),
           {"event": ("the French Revolution", "the Moon landing", "the fall of the Berlin Wall",
                      "the Battle of Hastings", "the Boston Tea Party", "the Meiji Restoration",
                      "the signing of the Magna Carta", "the Chernobyl disaster")}),
    Intent("recipe", ("Give me a recipe for {dish} for {n} people.",
                      "recipe for {dish} serving {n} people?",
                      "How do I cook {dish} for {n} people?",
                      "Can you share a {dish} recipe for {n} people"),
           {"dish": ("lasagna", "paella", "ramen", "risotto", "goulash", "pad thai", "chili"),
            "n": ("2", "4", "6", "8", "10", "12")}),
    Intent("recipe", ("How many calories are in {dish}?", "calories in {dish}?",
                      "What is the calorie count of {dish}?"),
           {"dish": ("lasagna", "paella", "ramen", "risotto", "goulash", "pad thai", "chili")}),
    Intent("place", ("What time zone is {city} in?", "Which time zone does {city} use?",
                     "time zone of {city}?", "what timezone is {city} in"),
           {"city": ("Tokyo", "Denver", "Lisbon", "Nairobi", "Auckland", "Toronto", "Mumbai",
                     "Santiago", "Helsinki", "Honolulu")}),
    Intent("place", ("What is the weather like in {city} in winter?",
                     "How cold does {city} get in winter?",
                     "what's the winter weather in {city}"),
           {"city": ("Tokyo", "Denver", "Lisbon", "Nairobi", "Auckland", "Toronto", "Mumbai",
                     "Santiago", "Helsinki", "Honolulu")}),
    Intent("travel", ("How far is it from {city} to {other} in km?",
                      "What is the distance in km between {city} and {other}?",
                      "distance from {city} to {other} in km?"),
           {"city": ("Paris", "Berlin", "Madrid", "Rome", "Vienna"),
            "other": ("London", "Prague", "Lisbon", "Athens", "Oslo")}),
    Intent("medicine", ("Can I take {drug} with alcohol?", "Is it ok to drink alcohol on {drug}?",
                        "can you mix {drug} and alcohol", "Is mixing {drug} with alcohol ok?"),
           {"drug": ("ibuprofen", "paracetamol", "aspirin", "amoxicillin", "metformin",
                     "loratadine", "omeprazole")},
           negated=("Why can I not take {drug} with alcohol?", "Should I never take {drug} "
                    "with alcohol?", "Is it not ok to drink alcohol on {drug}?")),
    Intent("medicine", ("What are the side effects of {drug}?",
                        "Which side effects does {drug} have?", "side effects of {drug}?"),
           {"drug": ("ibuprofen", "paracetamol", "aspirin", "amoxicillin", "metformin",
                     "loratadine", "omeprazole")}),
    Intent("tech", ("What is the difference between {a} and {b}?",
                    "{a} vs {b}: what's the difference?",
                    "How does {a} differ from {b}?", "explain the difference between {a} and {b}"),
           {"a": ("TCP", "SQL", "REST", "Docker", "Git"),
            "b": ("UDP", "NoSQL", "GraphQL", "Kubernetes", "SVN")}),
    Intent("tech", ("How do I install {tool} on {os}?", "What's the way to install {tool} on {os}?",
                    "install {tool} on {os}?", "how to install {tool} on {os}"),
           {"tool": ("Docker", "Node", "Postgres", "Redis", "Nginx"),
            "os": ("Ubuntu", "Windows", "macOS", "Fedora")}),
    Intent("tech", ("How do I uninstall {tool} on {os}?", "how to uninstall {tool} on {os}",
                    "remove {tool} from {os}?"),
           {"tool": ("Docker", "Node", "Postgres", "Redis", "Nginx"),
            "os": ("Ubuntu", "Windows", "macOS", "Fedora")}),
]

# The first unit of a question swapped for another of the same dimension.
# Written after the guards were designed, and run only for the final report: a check that
# the guards were not fitted to the two sets above.
HOLDOUT = [
    Intent("science", ("What is the boiling point of {liquid}?", "At what temperature does "
                       "{liquid} boil?", "boiling point of {liquid}?",
                       "When does {liquid} start to boil?"),
           {"liquid": ("water", "ethanol", "mercury", "acetone", "nitrogen", "olive oil")}),
    Intent("science", ("What is the freezing point of {liquid}?", "At what temperature does "
                       "{liquid} freeze?", "freezing point of {liquid}?"),
           {"liquid": ("water", "ethanol", "mercury", "acetone", "nitrogen", "olive oil")}),
    Intent("money", ("How much is {n} {cur} in yen?", "Convert {n} {cur} to yen.",
                     "what is {n} {cur} in yen", "{n} {cur} to yen?"),
           {"n": ("5", "20", "40", "75", "300", "1200"), "cur": ("dollars", "euros")}),
    Intent("sport", ("Who won the {cup} in {year}?", "Which team won the {cup} in {year}?",
                     "winner of the {cup} {year}?", "who was the {cup} champion in {year}"),
           {"cup": ("World Cup", "Stanley Cup", "Super Bowl", "Tour de France"),
            "year": ("1998", "2006", "2010", "2014", "2018")}),
    Intent("sport", ("Where was the {cup} held in {year}?", "In which country was the {cup} "
                     "played in {year}?", "where did the {cup} take place in {year}"),
           {"cup": ("World Cup", "Stanley Cup", "Super Bowl", "Tour de France"),
            "year": ("1998", "2006", "2010", "2014", "2018")}),
    Intent("errors", ("How do I fix a {err} in {lang}?", "How can I fix {err} errors in {lang}?",
                      "what causes a {err} in {lang} and how do i fix it",
                      "fixing a {err} in {lang}?"),
           {"err": ("segfault", "stack overflow", "null pointer exception", "memory leak",
                    "deadlock"), "lang": ("C", "Java", "Rust", "Python", "Go")},
           negated=("Why can I not fix a {err} in {lang}?", "Is a {err} in {lang} never "
                    "fixable?")),
    Intent("garden", ("When should I plant {plant}?", "What is the best time to plant {plant}?",
                      "when to plant {plant}?", "When do you plant {plant}?"),
           {"plant": ("tomatoes", "garlic", "tulips", "potatoes", "roses", "basil")},
           negated=("When should I not plant {plant}?", "When should you never plant {plant}?")),
    Intent("garden", ("How often should I water {plant}?", "how often do {plant} need water",
                      "How frequently should {plant} be watered?"),
           {"plant": ("tomatoes", "garlic", "tulips", "potatoes", "roses", "basil")}),
]

UNIT_SWAPS = {"km": "meters", "kg": "grams", "miles": "yards", "pounds": "ounces",
              "dollars": "pounds", "euros": "dollars", "yen": "euros"}
OPPOSITE_SWAPS = {"install": "uninstall", "good": "bad", "healthy": "harmful", "safe": "unsafe",
                  "winter": "summer", "cold": "hot", "before": "after", "boiling": "freezing",
                  "boil": "freeze", "won": "lost", "best": "worst"}


def _noise(rng: random.Random, text: str) -> str:
    """Surface changes a real user makes: case, trailing punctuation, a filler word."""
    choice = rng.random()
    if choice < 0.2:
        text = text.lower()
    elif choice < 0.35:
        text = text.rstrip("?.") + ""
    elif choice < 0.5:
        text = "Please, " + text[0].lower() + text[1:]
    elif choice < 0.6:
        text = text + " Thanks!"
    return text


def _values(rng: random.Random, intent: Intent) -> dict[str, str]:
    return {name: rng.choice(options) for name, options in intent.slots.items()}


def _swap_one(rng: random.Random, intent: Intent, values: dict[str, str],
              names: Callable[[str], bool]) -> dict[str, str] | None:
    """Another value for one slot whose name passes `names`."""
    candidates = [n for n in intent.slots if names(n) and len(intent.slots[n]) > 1]
    if not candidates:
        return None
    slot = rng.choice(candidates)
    other = rng.choice([v for v in intent.slots[slot] if v != values[slot]])
    return {**values, slot: other}


def _replace_word(text: str, table: dict[str, str]) -> str | None:
    words = text.split(" ")
    for i, word in enumerate(words):
        bare = word.strip("?.,!:").lower()
        if bare in table and table[bare] != bare:
            words[i] = word.replace(bare, table[bare])
            return " ".join(words)
    return None


def pairs(intents: list[Intent], seed: int, per_kind: int) -> Iterator[Pair]:
    rng = random.Random(seed)
    by_topic: dict[str, list[Intent]] = {}
    for intent in intents:
        by_topic.setdefault(intent.topic, []).append(intent)
    made = dict.fromkeys(("paraphrase", "same_topic", "negation", "number", "entity", "unit",
                          "opposite"), 0)
    attempts = 0
    while min(made.values()) < per_kind and attempts < 200 * per_kind:
        attempts += 1
        intent = rng.choice(intents)
        values = _values(rng, intent)
        a_form, b_form = rng.sample(intent.forms, 2)
        a = _noise(rng, _fill(a_form, values))
        kind = rng.choice([k for k, n in made.items() if n < per_kind])
        b: str | None = None
        if kind == "paraphrase":
            b = _noise(rng, _fill(b_form, values))
        elif kind == "same_topic":
            others = [i for i in by_topic[intent.topic] if i is not intent
                      and set(i.slots) <= set(values)]
            if others:
                b = _noise(rng, _fill(rng.choice(others[0:]).forms[0], values))
        elif kind == "negation" and intent.negated:
            b = _fill(rng.choice(intent.negated), values)
        elif kind == "number":
            swapped = _swap_one(rng, intent, values, lambda n: n == "n")
            b = None if swapped is None else _fill(a_form, swapped)
        elif kind == "entity":
            swapped = _swap_one(rng, intent, values, lambda n: n != "n")
            b = None if swapped is None else _fill(a_form, swapped)
        elif kind == "unit":
            b = _replace_word(_fill(a_form, values), UNIT_SWAPS)
        elif kind == "opposite":
            b = _replace_word(_fill(a_form, values), OPPOSITE_SWAPS)
        if b is None or b == a:
            continue
        if kind in ("number", "entity", "unit", "opposite"):
            a = _fill(a_form, values)
        made[kind] += 1
        yield {"a": a, "b": b, "kind": kind, "duplicate": kind == "paraphrase"}


SETS = {"tuning": (TUNING, 16), "evaluation": (EVALUATION, 1601), "holdout": (HOLDOUT, 77)}


def generate(name: str, per_kind: int = 200) -> list[Pair]:
    intents, seed = SETS[name]
    return list(pairs(intents, seed, per_kind))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--out", type=argparse.FileType("w"), default=sys.stdout)
    args = parser.parse_args(argv)
    for pair in generate(args.set, args.per_kind):
        args.out.write(json.dumps(pair) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
