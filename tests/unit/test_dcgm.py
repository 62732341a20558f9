"""GPU telemetry from the DCGM exporter: only our engine pods' GPUs, real exposition text,
fallback logged once, recovery noticed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spillgate.telemetry.dcgm import NO_DCGM_MESSAGE, DcgmReader, PodFilter, parse_dcgm

TEXT = (Path(__file__).parents[1] / "fixtures" / "dcgm_exporter.txt").read_text()
OURS = PodFilter("sg-spillgate-engine-", "llm")


def test_only_the_engine_pods_gpus_are_read() -> None:
    readings = parse_dcgm(TEXT, OURS, at=5.0)
    # By hand from the fixture: node-1 GPU 0 (98 %, 612.5 W), node-2 GPU 0 (41 %, 301.25 W).
    assert [(g.utilization_ratio, g.power_watts, g.temperature_c) for g in readings] == [
        (0.98, 612.5, 61.0), (0.41, 301.25, 55.0)]
    assert [g.index for g in readings] == [0, 1] and all(g.at == 5.0 for g in readings)
    assert readings[0].memory_used_bytes == 76800 * 1024 * 1024
    assert readings[0].memory_total_bytes == (76800 + 4096) * 1024 * 1024


def test_filters() -> None:
    assert len(parse_dcgm(TEXT, PodFilter(), at=0)) == 4  # every GPU, held or not
    assert len(parse_dcgm(TEXT, PodFilter(namespace="research"), at=0)) == 1
    assert parse_dcgm(TEXT, PodFilter("sg-spillgate-engine-", "other-ns"), at=0) == ()


def test_unreachable_exporter_is_logged_once_and_recovery_noticed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[str | Exception] = [OSError("connection refused")] * 3 + [TEXT]

    def fetch(url: str, timeout_s: float) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    reader = DcgmReader("http://dcgm:9400/metrics", OURS, fetch=fetch, clock=lambda: 1.0)
    with caplog.at_level(logging.INFO, logger="spillgate.telemetry.dcgm"):
        assert [reader.read() for _ in range(3)] == [(), (), ()]
        assert len(reader.read()) == 2
    warnings = [r for r in caplog.records if NO_DCGM_MESSAGE in r.getMessage()]
    assert len(warnings) == 1 and "connection refused" in warnings[0].getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_exporter_without_our_pods_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    reader = DcgmReader("http://dcgm:9400/metrics", PodFilter("nope-"),
                        fetch=lambda url, timeout: TEXT)
    with caplog.at_level(logging.WARNING, logger="spillgate.telemetry.dcgm"):
        assert reader.read() == () and reader.read() == ()
    assert len([r for r in caplog.records if "nope-" in r.getMessage()]) == 1


def test_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        DcgmReader("file:///etc/passwd", OURS)
