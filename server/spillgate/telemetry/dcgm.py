"""GPU readings from NVIDIA's DCGM exporter, for a gateway that runs without a GPU (Kubernetes).

Why DCGM rather than NVML served by each engine pod: the GPU operator already runs
dcgm-exporter on every GPU node (a DaemonSet, on by default), and with its Kubernetes mapping
each GPU's series carry the `pod` and `namespace` of the container holding it. Reading it
needs no change to the engine pods (vLLM stays vLLM's own image entrypoint, no side server, no
signal forwarding), no NVML library in the gateway image, and one scrape covers every engine
pod. The cost is a cluster prerequisite, documented in docs/deployment.md.

`parse_dcgm` is pure (exposition text → readings); `DcgmReader` fetches the text (blocking,
the sampler calls `read()` in a worker thread, as it does for NVML). A failed scrape, or one
listing no GPU of our engine pods, returns no readings and says so once in the log, until
readings come back: the node then runs on its engines' signals alone.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from spillgate.telemetry.snapshot import GpuReading

log = logging.getLogger(__name__)

UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
POWER = "DCGM_FI_DEV_POWER_USAGE"  # watts
TEMP = "DCGM_FI_DEV_GPU_TEMP"  # degrees C
MIB = 1 << 20
NO_DCGM_MESSAGE = "no GPU telemetry from the DCGM exporter: running on engine signals alone"


@dataclass(frozen=True, slots=True)
class PodFilter:
    """Which GPUs are ours: held by pods whose name starts with `pod_prefix` in `namespace`
    (empty fields match everything)."""

    pod_prefix: str = ""
    namespace: str = ""

    def matches(self, labels: dict[str, str]) -> bool:
        if self.namespace and labels.get("namespace") != self.namespace:
            return False
        return not self.pod_prefix or labels.get("pod", "").startswith(self.pod_prefix)


def parse_dcgm(text: str, pods: PodFilter, at: float) -> tuple[GpuReading, ...]:
    """One reading per GPU of our pods (keyed by UUID, ordered by node and index)."""
    values: dict[str, dict[str, float]] = {}
    places: dict[str, tuple[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (UTIL, FB_USED, FB_FREE, POWER, TEMP):
                continue
            if not pods.matches(sample.labels):
                continue
            uuid = sample.labels.get("UUID") or (
                f"{sample.labels.get('Hostname', '')}/{sample.labels.get('gpu', '')}")
            values.setdefault(uuid, {})[sample.name] = float(sample.value)
            places[uuid] = (sample.labels.get("Hostname", ""),
                            int(sample.labels.get("gpu", "0") or 0))
    readings = []
    for index, uuid in enumerate(sorted(values, key=lambda u: places[u])):
        fields = values[uuid]
        if UTIL not in fields:
            continue  # no utilization, no use to the overflow controller
        used = fields.get(FB_USED, 0.0)
        readings.append(GpuReading(
            index=index,
            utilization_ratio=min(1.0, max(0.0, fields[UTIL] / 100.0)),
            memory_used_bytes=int(used * MIB),
            memory_total_bytes=int((used + fields.get(FB_FREE, 0.0)) * MIB),
            power_watts=fields.get(POWER),
            temperature_c=fields.get(TEMP),
            at=at,
        ))
    return tuple(readings)


def _http_get(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (operator URL)
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


class DcgmReader:
    """A GpuReader over the DCGM exporter's /metrics (`fetch` is swappable in tests)."""

    def __init__(
        self,
        url: str,
        pods: PodFilter,
        *,
        timeout_s: float = 2.0,
        fetch: Callable[[str, float], str] = _http_get,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"telemetry.dcgm_url must be an http(s) URL, got {url!r}")
        self._url, self._pods, self._timeout_s = url, pods, timeout_s
        self._fetch, self._clock = fetch, clock
        self._failing = False

    @property
    def available(self) -> bool:
        return True  # configured; a round that yields nothing is logged, not fatal

    def read(self) -> tuple[GpuReading, ...]:
        try:
            readings = parse_dcgm(self._fetch(self._url, self._timeout_s), self._pods,
                                  self._clock())
        except Exception as exc:  # unreachable exporter, bad text: never stop the sampler
            self._fallback(f"{type(exc).__name__}: {exc}")
            return ()
        if not readings:
            self._fallback(f"no GPU of pods {self._pods.pod_prefix or '*'}* in namespace "
                           f"{self._pods.namespace or '*'}")
            return ()
        if self._failing:
            log.info("GPU telemetry from the DCGM exporter is back (%d GPUs)", len(readings))
            self._failing = False
        return readings

    def _fallback(self, why: str) -> None:
        if not self._failing:
            log.warning("%s (%s at %s)", NO_DCGM_MESSAGE, why, self._url)
            self._failing = True
