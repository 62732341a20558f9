"""GPU readings through NVML (nvidia-ml-py's `pynvml`), read-only.

Missing library, missing driver, or no GPU: the reader is `available = False`, says so once
in the log, and `read()` returns no readings. It never raises: a node without a GPU runs on
its engines' own signals. Nothing here changes a GPU setting; only nvmlDeviceGet* queries and
nvmlInit/nvmlShutdown are called.

`read()` blocks on the driver (milliseconds), so the sampler calls it in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from spillgate.telemetry.snapshot import GpuReading

log = logging.getLogger(__name__)

NO_NVML_MESSAGE = "no NVML: running on engine signals alone"


class GpuReader(Protocol):
    """What the sampler needs from a GPU reader (tests pass their own)."""

    @property
    def available(self) -> bool: ...

    def read(self) -> tuple[GpuReading, ...]: ...


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


class NvmlReader:
    """Reads every visible GPU. `load` returns the pynvml module (swappable in tests)."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        load: Callable[[], Any] = _import_pynvml,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._nvml: Any = None
        self._handles: tuple[Any, ...] = ()
        self._warned_read = False
        if not enabled:
            log.info("%s (disabled by telemetry.nvml)", NO_NVML_MESSAGE)
            return
        self._start(load)

    def _start(self, load: Callable[[], Any]) -> None:
        try:
            nvml = load()
            nvml.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded …
            log.warning("%s (%s)", NO_NVML_MESSAGE, _describe(exc))
            return
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = tuple(nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
        except Exception as exc:
            log.warning("%s (%s)", NO_NVML_MESSAGE, _describe(exc))
            _shutdown(nvml)
            return
        if not handles:
            log.warning("%s (NVML sees no GPU)", NO_NVML_MESSAGE)
            _shutdown(nvml)
            return
        self._nvml, self._handles = nvml, handles

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def read(self) -> tuple[GpuReading, ...]:
        """One reading per GPU; a GPU whose query fails is left out of this round."""
        if self._nvml is None:
            return ()
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                readings.append(self._read_one(index, handle))
            except Exception as exc:
                if not self._warned_read:  # a lost GPU would otherwise log every second
                    log.warning("NVML read of GPU %d failed: %s", index, _describe(exc))
                    self._warned_read = True
        return tuple(readings)

    def _read_one(self, index: int, handle: Any) -> GpuReading:
        nvml = self._nvml
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuReading(
            index=index,
            utilization_ratio=float(utilization.gpu) / 100.0,
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            power_watts=self._optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            temperature_c=self._optional(
                lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
            at=self._clock(),
        )

    @staticmethod
    def _optional(query: Callable[[], float]) -> float | None:
        """Power and temperature are not reported by every board (NVMLError_NotSupported)."""
        try:
            return float(query())
        except Exception:
            return None

    def close(self) -> None:
        if self._nvml is not None:
            _shutdown(self._nvml)
            self._nvml, self._handles = None, ()


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as exc:
        log.debug("nvmlShutdown failed: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
