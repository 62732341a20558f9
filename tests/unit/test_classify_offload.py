"""Large bodies are classified off the event loop; what cannot be read keeps a request local."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from spillgate.classify import OFFLOAD_BYTES, classify, classify_async
from spillgate.routing.sensitivity import SensitivityDetector
from spillgate.routing.sensitivity_walk import BodyText, body_texts


@pytest.fixture(scope="module")
def detector() -> SensitivityDetector:
    return SensitivityDetector()


def _body(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_a_large_body_is_scanned_while_the_loop_keeps_running(
    detector: SensitivityDetector,
) -> None:
    # The scan itself waits for a callback that only a free event loop can run: on the loop,
    # the wait would time out. (Counting the loop's ticks during the scan was timing-bound:
    # a scan shorter than the GIL's switch interval let the loop tick only once.)
    text = "the order shipped on 2024-05-01 as planned. " * 2000 + " jane@example.org"
    loop_ran_during_scan: list[bool] = []

    async def scenario() -> frozenset[str]:
        loop = asyncio.get_running_loop()
        loop_ran = threading.Event()

        def extract(body: Mapping[str, Any]) -> BodyText:
            loop.call_soon_threadsafe(loop_ran.set)
            loop_ran_during_scan.append(loop_ran.wait(timeout=5))
            return body_texts(body)

        verdict = await classify_async(
            _body(text), {}, detector=detector, extract=extract, key_local_only=False,
            route_local_only=False, body_bytes=len(text))
        return verdict.classes

    assert len(text) > OFFLOAD_BYTES
    assert asyncio.run(scenario()) == {"email"}
    assert loop_ran_during_scan == [True]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "auto", "prompt": [1, 2, 3]}, {"token_ids"}),
        (_body("hello"), set()),
        (_body("SSN: 536228475"), {"us_ssn"}),
    ],
)
def test_classes_name_what_keeps_a_request_local(
    detector: SensitivityDetector, body: dict[str, object], expected: set[str]
) -> None:
    verdict = classify(body, {}, detector=detector, extract=body_texts, key_local_only=False,
                       route_local_only=False)
    assert verdict.classes == expected
    assert verdict.sensitive == bool(expected)


def test_a_spent_budget_is_its_own_class() -> None:
    verdict = classify(_body("order 1234567 " * 100), {}, detector=SensitivityDetector(0.0),
                       extract=body_texts, key_local_only=False, route_local_only=False)
    assert verdict.classes == {"scan_budget"}
