"""py-spy's collapsed stacks (`--format raw`) as tables: per function, and per layer.

Used by scripts/bench_gateway.py --cpu-only --py-spy FILE; also on its own:

    .venv/bin/python scripts/spy_tables.py FILE
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def spy_table(path: Path, top: int = 45) -> str:
    """Share of samples per function from py-spy's collapsed stacks: inclusive and self."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for stack, n in _stacks(path):
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "| inclusive % | self % | function |", "|---|---|---|"]
    for frame, n in inclusive.most_common(top):
        lines.append(f"| {100 * n / total:.1f} | {100 * own[frame] / total:.1f} | {frame} |")
    lines += ["", "| self % | function |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | {frame} |" for frame, n in own.most_common(top)]
    return "\n".join(lines)


# The layer a sample's innermost frame belongs to, first match wins (the ledger writer by its
# thread's entry point, anywhere in the stack).
_LAYERS: list[tuple[str, Callable[[list[str], str], bool]]] = [
    ("ledger writer thread", lambda stack, last: any("ThreadedWriter._run" in f for f in stack)),
    ("socket writes (to the client, to the upstream)",
     lambda stack, last: last.startswith(("HeldHeadTransport.write", "_Connection.exchange"))),
    ("uvicorn's protocol and the head limits",
     lambda stack, last: "uvicorn/" in last or "http_limits.py" in last
     or last.startswith("Gateway.__call__")),
    ("event loop (uvloop, in C)", lambda stack, last: last.startswith("Runner.run")),
    ("pydantic", lambda stack, last: "pydantic/" in last),
    ("the gateway's own code", lambda stack, last: "spillgate/" in last),
]


def spy_layers(path: Path) -> str:
    """Share of samples per layer, by each sample's innermost frame."""
    shares: Counter[str] = Counter()
    total = 0
    for stack, n in _stacks(path):
        total += n
        layer = next((name for name, match in _LAYERS if match(stack, stack[-1])), "other")
        shares[layer] += n
    lines = ["| layer | share of samples |", "|---|---|"]
    lines += [f"| {name} | {100 * n / max(total, 1):.1f}% |" for name, n in shares.most_common()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(spy_table(Path(sys.argv[1])))
    print(spy_layers(Path(sys.argv[1])))
