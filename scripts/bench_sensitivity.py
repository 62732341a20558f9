"""Scan time of the sensitivity detector: 4 KB prompts, and the 1 MiB worst cases.

    .venv/bin/python scripts/bench_sensitivity.py [--runs 5000] [--big-runs 3]

Each case is a whole chat request body scanned as the node scans it (`scan_body`: the walk
over every string, normalization, the seams between strings, the rules).

4 KB cases: a clean prompt (prose, code, versions, dates, a URL: the digits and punctuation a
typical prompt carries), the same prompt with one entity of every class spliced in, pure
prose without digits, a digit-heavy clean prompt (log lines, order numbers, ISBNs, IPs) that
exercises every candidate validator, and a clean non-ASCII prompt (NFKC and folding run).
Target: p50 <= 200 µs for the clean 4 KB prompt.

1 MiB cases (the worst case the issue names, and the shapes that make each rule's validator
run on every candidate): NANP-shaped groups, IBAN-like groups that fail mod-97, Luhn-failing
card-shaped numbers, base64-looking runs, non-ASCII text. A scan past its time budget stops
there (the request is kept local), so the worst case is bounded by the budget.

Prints mean/p50/p99/max in microseconds (4 KB) or milliseconds (1 MiB) and writes
var/bench_sensitivity.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from faker import Faker

from spillgate.routing.sensitivity import DEFAULT_BUDGET_S, SensitivityDetector

ROOT = Path(__file__).resolve().parents[1]
SIZE = 4096
TARGET_US = 200.0

_TECH_LINES = [
    "We upgraded from Python 3.11.7 to 3.12.2 on 2024-05-01 and latency rose by 12%.",
    "See https://docs.python.org/3/library/re.html#regular-expression-syntax for details.",
    "```python\nfor i in range(10):\n    total += prices[i] * 1.2\n```",
    "The build (v2.31.0, commit 9f2c1ab) costs $49.99 per seat for 25 seats.",
    "Table 3 shows 1,250 requests/s at p99 = 180 ms on 2 cores.",
]
_DIGIT_HEAVY = [
    "2024-05-01 12:30:45,123 INFO request 123e4567-e89b-12d3-a456-426614174000 took 38 ms",
    "order #48213991 shipped; PO 4500012345; invoice INV-20240501-0042",
    "ISBN 978-3-16-148410-0 and 0-306-40615-2; epoch 1700000000 / 1700000000123",
    "hosts 10.0.12.7:8080 and 192.168.100.200; sha1 9f2c1ab4e5d6c7b8a9012345678901234567abcd",
    "prices $1,299.99, 1.299,00 EUR; versions 1.2.3.4567, 10.15.7; EIN 12-3456789",
]
_NON_ASCII = [
    "Die Größe beträgt 500\u00a0ml \u2013 bitte «sofort» liefern; Preis: 12,50\u00a0€.",
    "日本語のテキストも含まれます。価格は１２００円です。",
    "Le café coûte 3,20\u202f€ à l\u2019étage n° 4.",
]
_ENTITIES = [
    "Please charge my card 4111 1111 1111 1111 for the renewal.",
    "Wire it to DE89 3704 0044 0532 0130 00 by Friday.",
    "My SSN is 123-45-6789.",
    "Reach me at jane.doe@example.com or (415) 555-2671.",
    "My key is AKIAIOSFODNN7EXAMPLE, do not share.",
]


def _fill(parts: list[str], fake: Faker) -> str:
    """Interleave `parts` with Faker prose until exactly SIZE characters."""
    out: list[str] = []
    i = 0
    while sum(len(p) + 1 for p in out) < SIZE:
        out.append(fake.paragraph(nb_sentences=3))
        if i < len(parts):
            out.append(parts[i])
            i += 1
    return "\n".join(out)[:SIZE]


def prompts() -> dict[str, str]:
    fake = Faker("en_US")
    fake.seed_instance(7)
    clean = _fill(_TECH_LINES, fake)
    half = len(clean) // 2
    with_entities = clean[:half] + "\n" + "\n".join(_ENTITIES) + "\n" + clean[half:]
    return {
        "clean_4k": clean,
        "entities_4k": with_entities[: SIZE + 200],  # a little over 4 KB: every entity fits
        "prose_4k": _fill([], fake),
        "digit_heavy_clean_4k": _fill(_DIGIT_HEAVY * 3, fake),
        "non_ascii_clean_4k": _fill(_NON_ASCII, fake),
    }


def big_bodies() -> dict[str, str]:
    """1 MiB of each shape that makes a rule's validator run on every candidate."""
    mib = 1 << 20
    shapes = {
        "nanp_groups_1mib": "(555) 010-0000 ",
        "iban_like_1mib": "DE00 1234 5678 9012 3456 78 ",
        "luhn_failing_cards_1mib": "4111 1111 1111 1112 ",
        "base64_runs_1mib": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY\x01 ",
        "digit_log_1mib": "2024-05-01 12:30:45,123 order 48213991 PO 4500012345 ",
        "non_ascii_1mib": "Größe \uff15\uff10\uff10\uff4d\uff4c \u2013 café\u00a0№ 12\u200b34 ",
    }
    return {name: (unit * (mib // len(unit) + 1))[:mib] for name, unit in shapes.items()}


def _body(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def measure(detector: SensitivityDetector, text: str, runs: int,
            unit: float = 1000) -> dict[str, float]:
    body = _body(text)
    for _ in range(min(50, runs)):
        detector.scan_body(body)
    samples: list[float] = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        detector.scan_body(body)
        samples.append((time.perf_counter_ns() - started) / unit)
    samples.sort()
    return {
        "mean_us": round(statistics.fmean(samples), 1),
        "p50_us": round(samples[len(samples) // 2], 1),
        "p99_us": round(samples[int(len(samples) * 0.99)], 1),
        "max_us": round(samples[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--big-runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench_sensitivity.json")
    args = parser.parse_args()

    started = time.perf_counter()
    detector = SensitivityDetector()
    init_ms = (time.perf_counter() - started) * 1000
    results: dict[str, dict[str, object]] = {}
    print(f"{'case':<22}{'bytes':>6}{'classes':>40}{'mean':>8}{'p50':>8}{'p99':>8}{'max':>9}  µs")
    for name, text in prompts().items():
        classes = sorted(detector.scan_body(_body(text)))
        stats = measure(detector, text, args.runs)
        results[name] = {"bytes": len(text.encode()), "classes": classes, **stats}
        print(
            f"{name:<22}{len(text.encode()):>6}{','.join(classes) or '-':>40}"
            f"{stats['mean_us']:>8}{stats['p50_us']:>8}{stats['p99_us']:>8}{stats['max_us']:>9}"
        )
    print(f"\n{'case (1 MiB)':<26}{'classes':>36}{'mean':>8}{'p50':>8}{'max':>8}  ms")
    for name, text in big_bodies().items():
        classes = sorted(detector.scan_body(_body(text)))
        stats = measure(detector, text, args.big_runs, unit=1_000_000)
        results[name] = {"bytes": len(text.encode()), "classes": classes,
                         **{k.replace("_us", "_ms"): v for k, v in stats.items()}}
        print(f"{name:<26}{','.join(classes) or '-':>36}{stats['mean_us']:>8}"
              f"{stats['p50_us']:>8}{stats['max_us']:>8}")
    worst = max((v for k, v in results.items() if k.endswith("_1mib")),
                key=lambda v: float(str(v["max_ms"])))
    print(f"1 MiB worst case: {worst['max_ms']} ms (budget {DEFAULT_BUDGET_S * 1000:.0f} ms)")
    clean_p50 = float(str(results["clean_4k"]["p50_us"]))
    verdict = "meets" if clean_p50 <= TARGET_US else "MISSES"
    print(
        f"detector init {init_ms:.1f} ms; clean 4 KB p50 {clean_p50} µs {verdict} the "
        f"{TARGET_US:.0f} µs target"
    )
    report = {
        "runs": args.runs,
        "init_ms": round(init_ms, 1),
        "target_p50_us": TARGET_US,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
