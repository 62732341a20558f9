"""Step 2 of the path: what kind of request is this? Sensitivity, tier pin, tags.

Fail closed: if the detector raises, the request is sensitive (class `detector_error`); if
it runs past its time budget, class `scan_budget`; parts of the body it cannot read (token
ids, binary) are classes too (`token_ids`, `binary`). Each keeps the request on the node.

Large bodies are classified in a worker thread (`classify_async`), so a 1 MiB scan does not
stall the event loop that serves every other request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from spillgate.errors import InvalidRequest
from spillgate.routing.sensitivity import SCAN_BUDGET, ScanBudgetExceeded
from spillgate.routing.sensitivity_walk import BodyText
from spillgate.types import JSON, Tier

log = logging.getLogger(__name__)

TIER_HEADER = "x-spillgate-tier"
DATA_CLASS_HEADER = "x-spillgate-data-class"
TAGS_HEADER = "x-spillgate-tags"
_TAG_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Detector(Protocol):
    def scan(self, texts: Iterable[str]) -> frozenset[str]: ...


TextExtractor = Callable[[Mapping[str, Any]], BodyText]
# Bodies larger than this are scanned off the event loop (a thread hop costs ~50 µs; a
# 64 KiB scan costs about a millisecond).
OFFLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Classification:
    classes: frozenset[str]  # entity classes found, plus "header"/"key_policy"/…
    tier_pin: Tier | None

    @property
    def sensitive(self) -> bool:
        return bool(self.classes)


async def classify_async(
    body: JSON,
    headers: Mapping[str, str],
    *,
    detector: Detector,
    extract: TextExtractor,
    key_local_only: bool,
    route_local_only: bool,
    body_bytes: int,
) -> Classification:
    """`classify`, in a worker thread when the body is large (the event loop keeps serving)."""
    run = functools.partial(classify, body, headers, detector=detector, extract=extract,
                            key_local_only=key_local_only, route_local_only=route_local_only)
    return run() if body_bytes <= OFFLOAD_BYTES else await asyncio.to_thread(run)


def classify(
    body: JSON,
    headers: Mapping[str, str],
    *,
    detector: Detector,
    extract: TextExtractor,
    key_local_only: bool,
    route_local_only: bool,
) -> Classification:
    classes = set(_scan(detector, extract, body))
    data_class = headers.get(DATA_CLASS_HEADER, "").strip().lower()
    if data_class == "sensitive":
        classes.add("declared")
    elif data_class not in ("", "public", "internal"):
        raise InvalidRequest(
            f"{DATA_CLASS_HEADER} must be `sensitive` or `public`", param=DATA_CLASS_HEADER
        )
    if key_local_only:
        classes.add("key_policy")
    if route_local_only:
        classes.add("route_policy")
    return Classification(frozenset(classes), _tier_pin(headers))


def _scan(detector: Detector, extract: TextExtractor, body: JSON) -> frozenset[str]:
    try:
        extracted = extract(body)
        return detector.scan(extracted.texts) | extracted.unscannable
    except ScanBudgetExceeded as exc:  # fail closed: a body too costly to read is not clean
        log.warning("sensitivity scan ran past its time budget; keeping the request local")
        return exc.found | {SCAN_BUDGET}
    except Exception:  # fail closed: an unscannable request is sensitive
        log.exception("sensitivity detector failed; treating the request as sensitive")
        return frozenset({"detector_error"})


def _tier_pin(headers: Mapping[str, str]) -> Tier | None:
    value = headers.get(TIER_HEADER, "").strip().lower()
    if not value:
        return None
    if value == "local":
        return "local"
    if value == "api":
        return "api"
    raise InvalidRequest(f"{TIER_HEADER} must be `local` or `api`", param=TIER_HEADER)


def parse_tags(headers: Mapping[str, str]) -> dict[str, str]:
    """`x-spillgate-tags: project=atlas,task=summarize` → {"project": "atlas", …}."""
    raw = headers.get(TAGS_HEADER, "")
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not _TAG_PART.match(key) or not _TAG_PART.match(value):
            raise InvalidRequest(
                f"{TAGS_HEADER}: expected comma-separated key=value pairs of "
                "[A-Za-z0-9_.-], at most 64 characters each",
                param=TAGS_HEADER,
            )
        tags[key] = value
    if len(tags) > 16:
        raise InvalidRequest(f"{TAGS_HEADER}: at most 16 tags", param=TAGS_HEADER)
    return tags
