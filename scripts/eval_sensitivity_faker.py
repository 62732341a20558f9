"""A third check of the detector, by a generator nobody here wrote: Faker's own phone, email,
IBAN, card and SSN providers in 15 locales, each value in several sentence frames, some with a
phone/contact word and some with none; plus Faker prose, addresses and dates as harmless text.

Neither corpus script tunes on this (they are `sensitivity_corpus.py` and
`sensitivity_eval_corpus.py`). Run: .venv/bin/python scripts/eval_sensitivity_faker.py
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable

from faker import Faker

from spillgate.routing.sensitivity import SensitivityDetector

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR",
           "ja_JP", "en_IN", "en_AU", "sv_SE", "tr_TR", "cs_CZ")
WITH_CONTEXT = ("Please contact me: {v}.", "call me on {v}", "Tel. {v}", "Kontakt: {v}")
NO_CONTEXT = ("{v}", "my details are {v} thanks", "Note for the file — {v} (verified)")
VALUES: dict[str, Callable[[Faker], str]] = {
    "phone": lambda f: str(f.phone_number()),
    "email": lambda f: str(f.email()),
    "iban": lambda f: str(f.iban()),
    "payment_card": lambda f: str(f.credit_card_number()),
    "us_ssn": lambda f: str(Faker("en_US").ssn()),
}


def harmless(f: Faker, r: random.Random) -> str:
    return str(r.choice([f.sentence(), f.address(), f.date(), f.company(), f.catch_phrase(),
                         f"version {f.pyint()}.{f.pyint()}", str(f.date_time()), f.postcode()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-locale", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    detector, r = SensitivityDetector(), random.Random(args.seed)
    found, total, missed = Counter[str](), Counter[str](), {}
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(r.randrange(1 << 30))
        for cls, make in VALUES.items():
            for _ in range(args.per_locale):
                value = make(fake)
                for frames, where in ((WITH_CONTEXT, "context"), (NO_CONTEXT, "bare")):
                    total[cls, where] += 1
                    if detector.scan([r.choice(frames).format(v=value)]):
                        found[cls, where] += 1
                    else:
                        missed.setdefault((cls, where), []).append(f"{locale}:{value}")
    print(f"{'class':13s} {'with a phone/contact word':>26s} {'no context':>12s}")
    for cls in VALUES:
        cells = [f"{found[cls, w]}/{total[cls, w]}" for w in ("context", "bare")]
        print(f"{cls:13s} {cells[0]:>26s} {cells[1]:>12s}  missed e.g. "
              f"{(missed.get((cls, 'context'), []) + missed.get((cls, 'bare'), []))[:3]}")
    kept, n = [], 0
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(r.randrange(1 << 30))
        for _ in range(args.per_locale):
            text, n = harmless(fake, r), n + 1
            if classes := detector.scan([text]):
                kept.append(f"{locale}:{text!r}->{','.join(sorted(classes))}")
    print(f"harmless kept local: {len(kept)}/{n} = {len(kept) / n:.2%}  {kept[:4]}")


if __name__ == "__main__":
    main()
