"""Large bodies are classified off the event loop; what cannot be read keeps a request local."""

from __future__ import annotations

import asyncio

import pytest

from spillgate.classify import OFFLOAD_BYTES, classify, classify_async
from spillgate.routing.sensitivity import SensitivityDetector
from spillgate.routing.sensitivity_walk import body_texts


@pytest.fixture(scope="module")
def detector() -> SensitivityDetector:
    return SensitivityDetector()


def _body(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_a_large_body_is_scanned_while_the_loop_keeps_running(
    detector: SensitivityDetector,
) -> None:
    text = "the order shipped on 2024-05-01 as planned. " * 2000 + " jane@example.org"
    ticks_during_scan = 0

    async def scenario() -> frozenset[str]:
        nonlocal ticks_during_scan
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks_during_scan
            while not done.is_set():
                ticks_during_scan += 1
                await asyncio.sleep(0.0005)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks_before = ticks_during_scan
        verdict = await classify_async(
            _body(text), {}, detector=detector, extract=body_texts, key_local_only=False,
            route_local_only=False, body_bytes=len(text))
        done.set()
        await ticking
        ticks_during_scan -= ticks_before
        return verdict.classes

    assert len(text) > OFFLOAD_BYTES
    assert asyncio.run(scenario()) == {"email"}
    # On the loop, the scan would have run between two ticks; in a thread the loop went on.
    assert ticks_during_scan > 1


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
