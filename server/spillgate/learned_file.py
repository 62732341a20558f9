"""Files of the learned dispatcher: labelled rows in, router models in and out.

Kept apart from `spillgate.routing` so that the routing package stays free of I/O: this
module reads and writes, `routing.learned` computes.

Labelled rows are JSON lines `{"prompt": str, "weak_ok": bool, "strong_ok": bool}` with an
optional `subject` (used only to split subjects for held-out evaluation).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spillgate.errors import ConfigError
from spillgate.routing.learned import Dispatcher, LearnedRouter, RouterFileError
from spillgate.routing.learned_train import Labelled, subject_split

if TYPE_CHECKING:
    from spillgate.settings import Settings


@dataclass(frozen=True, slots=True)
class Rows:
    indexes: list[int]  # line numbers (0-based) of the kept rows in the file
    subjects: list[str]
    data: Labelled
    sha256: str  # of the whole file, whatever was kept


def read_rows(path: Path) -> Rows:
    """Every row of a labelled JSONL file; ConfigError names the first bad line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    prompts, weak, strong, subjects = [], [], [], []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        prompt, w, s, subject = _row(path, number, line)
        prompts.append(prompt)
        weak.append(w)
        strong.append(s)
        subjects.append(subject)
    if not prompts:
        raise ConfigError(f"{path}: no rows")
    return Rows(list(range(len(prompts))), subjects,
                Labelled(prompts, np.array(weak, dtype=np.float64),
                         np.array(strong, dtype=np.float64)),
                hashlib.sha256(raw).hexdigest())


def _row(path: Path, number: int, line: bytes) -> tuple[str, float, float, str]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{path}:{number}: not JSON ({exc})") from exc
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise ConfigError(f"{path}:{number}: expected an object with a string `prompt`")
    for field in ("weak_ok", "strong_ok"):
        if not isinstance(row.get(field), bool | int) or row[field] not in (0, 1):
            raise ConfigError(f"{path}:{number}: `{field}` must be true or false")
    return row["prompt"], float(row["weak_ok"]), float(row["strong_ok"]), \
        str(row.get("subject", ""))


def select_half(rows: Rows, seed: int, half: int, pinned: tuple[str, ...],
                with_pinned: bool) -> Rows:
    """Rows of one half of the seeded subject split (plus the pinned subjects if asked)."""
    first, second = subject_split(rows.subjects, seed, pinned)
    keep = set(first if half == 1 else second) | (set(pinned) if with_pinned else set())
    picked = [i for i, subject in enumerate(rows.subjects) if subject in keep]
    if not picked:
        raise ConfigError("the subject split kept no rows (do the rows carry `subject`?)")
    data = rows.data
    return Rows([rows.indexes[i] for i in picked], [rows.subjects[i] for i in picked],
                Labelled([data.prompts[i] for i in picked], data.weak_ok[picked],
                         data.strong_ok[picked]), rows.sha256)


def save_router(path: Path, router: LearnedRouter) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(router.to_dict(), separators=(",", ":")) + "\n")
    tmp.replace(path)  # never a half-written model next to a running node


def load_router(path: Path) -> LearnedRouter:
    """The router in `path`; ConfigError (naming the file) if it cannot be used."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read router {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"router {path}: not a router file")
    try:
        return LearnedRouter.from_dict(data)
    except RouterFileError as exc:
        raise ConfigError(f"router {path}: {exc}") from exc


def load_dispatchers(settings: Settings) -> dict[str, Dispatcher]:
    """The learned dispatcher of every route that names a `router`, its threshold set from
    `threshold` or calibrated from `paid_share`; the embedding model loads only if needed."""
    dispatchers = {}
    for rs in settings.routes:
        if rs.router is None:
            continue
        router = load_router(rs.router)
        embed = None
        if router.embedder is not None:
            from spillgate.embeddings import load_local_embedder

            embedder = load_local_embedder()
            if embedder.model_id != router.embedder:
                raise ConfigError(f"routes.{rs.name}.router: trained with embeddings of "
                                  f"{router.embedder}; this node has {embedder.model_id}")
            embed = embedder.embed
        threshold = rs.threshold if rs.threshold is not None \
            else router.threshold_for_share(rs.paid_share or 0.0)
        dispatchers[rs.name] = Dispatcher(router, threshold, embed)
    return dispatchers
