"""NVML reader: never raises; unavailable without a GPU; unit conversion on a fake NVML."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from spillgate.telemetry.nvml import NO_NVML_MESSAGE, NvmlReader


def _real_nvml_works() -> bool:
    if importlib.util.find_spec("pynvml") is None:
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_real_nvml_works(), reason="this machine has a working NVML")
def test_real_reader_without_gpu_is_unavailable_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="spillgate.telemetry.nvml"):
        reader = NvmlReader()
        assert reader.available is False
        assert reader.read() == () and reader.read() == ()
        reader.close()
    assert [r.getMessage().startswith(NO_NVML_MESSAGE) for r in caplog.records] == [True]


def test_missing_library_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    def load() -> Any:
        raise ImportError("No module named 'pynvml'")

    with caplog.at_level(logging.WARNING, logger="spillgate.telemetry.nvml"):
        reader = NvmlReader(load=load)
    assert not reader.available and reader.read() == ()
    assert "ImportError" in caplog.text and NO_NVML_MESSAGE in caplog.text


def test_disabled_reader_never_touches_nvml() -> None:
    def load() -> Any:
        raise AssertionError("NVML loaded although disabled")

    reader = NvmlReader(enabled=False, load=load)
    assert not reader.available and reader.read() == ()


@dataclass
class _Util:
    gpu: int


@dataclass
class _Mem:
    used: int
    total: int


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The handful of pynvml functions the reader calls, over a list of fake boards."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, boards: list[dict[str, Any]], devices_fail: bool = False) -> None:
        self.boards = boards
        self.devices_fail = devices_fail
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        if self.devices_fail:
            raise FakeNvmlError("Unknown Error")
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.boards[i]

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> _Util:
        if h.get("lost"):
            raise FakeNvmlError("GPU is lost")
        return _Util(h["util"])

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> _Mem:
        return _Mem(h["used"], h["total"])

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        if h.get("mw") is None:
            raise FakeNvmlError("Not Supported")
        return int(h["mw"])

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return int(h["temp"])


def test_fake_boards_convert_units_and_missing_power_is_none() -> None:
    nvml = FakeNvml([
        {"util": 87, "used": 70 << 30, "total": 80 << 30, "mw": 612_345, "temp": 71},
        {"util": 0, "used": 1 << 20, "total": 80 << 30, "mw": None, "temp": 30},
    ])
    reader = NvmlReader(load=lambda: nvml, clock=lambda: 42.0)
    assert reader.available
    first, second = reader.read()
    assert (first.index, first.utilization_ratio, first.power_watts) == (0, 0.87, 612.345)
    assert (first.memory_used_bytes, first.memory_total_bytes) == (70 << 30, 80 << 30)
    assert (first.temperature_c, first.at) == (71.0, 42.0)
    assert second.power_watts is None and second.utilization_ratio == 0.0
    reader.close()
    assert nvml.shutdowns == 1 and not reader.available and reader.read() == ()


def test_lost_gpu_is_left_out_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([
        {"util": 10, "used": 1, "total": 2, "mw": 1000, "temp": 40},
        {"lost": True},
    ])
    reader = NvmlReader(load=lambda: nvml)
    with caplog.at_level(logging.WARNING, logger="spillgate.telemetry.nvml"):
        for _ in range(3):
            assert [g.index for g in reader.read()] == [0]
    assert caplog.text.count("GPU 1 failed") == 1


def test_device_enumeration_failure_is_unavailable() -> None:
    nvml = FakeNvml([], devices_fail=True)
    reader = NvmlReader(load=lambda: nvml)
    assert not reader.available and nvml.shutdowns == 1


def test_no_gpu_is_unavailable() -> None:
    nvml = FakeNvml([])
    assert not NvmlReader(load=lambda: nvml).available
