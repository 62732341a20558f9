"""Build the cascade's labelled evaluation set: short questions with checkable gold answers.

    python scripts/cascade_eval_set.py > tests/fixtures/cascade_eval.jsonl

200 rows from a fixed seed (the file is committed; rerunning reproduces it byte for byte):
small additions and subtractions, capitals, everyday units, and yes/no comparisons — tasks the
bundled SmolLM2-135M gets right only some of the time, which is what a confidence signal must
tell apart. Each row: {"id", "kind", "prompt", "gold"}; `spillgate eval cascade` grades an
answer by the first number (arithmetic, units), the first yes/no word, or the gold word
appearing among the first words (capitals).
"""

from __future__ import annotations

import random
import sys

import orjson

SEED = 15
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Hungary": "Budapest", "Canada": "Ottawa", "Australia": "Canberra",
    "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara", "Iran": "Tehran",
    "Iraq": "Baghdad", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Argentina": "Buenos Aires", "Brazil": "Brasilia",
    "India": "New Delhi", "Mexico": "Mexico City", "South Korea": "Seoul",
    "Indonesia": "Jakarta", "Nigeria": "Abuja", "Morocco": "Rabat",
}
UNITS = [
    ("How many centimeters are in one meter?", "100"),
    ("How many minutes are in one hour?", "60"),
    ("How many seconds are in one minute?", "60"),
    ("How many hours are in one day?", "24"),
    ("How many days are in one week?", "7"),
    ("How many months are in one year?", "12"),
    ("How many grams are in one kilogram?", "1000"),
    ("How many meters are in one kilometer?", "1000"),
    ("How many millimeters are in one centimeter?", "10"),
    ("How many days are in a leap year?", "366"),
    ("How many legs does a spider have?", "8"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a hexagon have?", "6"),
    ("How many wheels does a bicycle have?", "2"),
    ("How many players are on a soccer team on the field?", "11"),
    ("How many cents are in one dollar?", "100"),
    ("How many weeks are in one year?", "52"),
    ("How many hours are in two days?", "48"),
    ("How many minutes are in half an hour?", "30"),
    ("How many days are in the month of June?", "30"),
]
FACTS = [
    ("Is the sun hot?", "yes"), ("Is ice cold?", "yes"), ("Is fire wet?", "no"),
    ("Can fish breathe under water?", "yes"), ("Is the sky green on a clear day?", "no"),
    ("Do cats bark?", "no"), ("Is water wet?", "yes"), ("Can birds fly?", "yes"),
    ("Is a whale a fish?", "no"), ("Is Paris in France?", "yes"),
    ("Is snow black?", "no"), ("Do humans need air to live?", "yes"),
]
ASK_NUMBER = " Answer with the number only."
ASK_WORD = " Answer with the city name only."
ASK_YES_NO = " Answer yes or no."


def rows(rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for _ in range(60):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if rng.random() < 0.5:
            out.append({"kind": "arithmetic", "prompt": f"What is {a} + {b}?" + ASK_NUMBER,
                        "gold": str(a + b)})
        else:
            a, b = max(a, b), min(a, b)
            out.append({"kind": "arithmetic", "prompt": f"What is {a} - {b}?" + ASK_NUMBER,
                        "gold": str(a - b)})
    for country, capital in CAPITALS.items():
        out.append({"kind": "capital", "prompt": f"What is the capital of {country}?" + ASK_WORD,
                    "gold": capital})
    for question, gold in UNITS:
        out.append({"kind": "unit", "prompt": question + ASK_NUMBER, "gold": gold})
    for question, gold in FACTS:
        out.append({"kind": "yes_no", "prompt": question + ASK_YES_NO, "gold": gold})
    while len(out) < 200:
        a, b = rng.sample(range(1, 100), 2)
        out.append({"kind": "yes_no", "prompt": f"Is {a} greater than {b}?" + ASK_YES_NO,
                    "gold": "yes" if a > b else "no"})
    rng.shuffle(out)
    return [{"id": f"c{i:03d}", **row} for i, row in enumerate(out)]


def main() -> int:
    for row in rows(random.Random(SEED)):
        sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
