"""`telemetry:` the capacity sampler (NVML, DCGM, engine /metrics) and overflow limits."""

from __future__ import annotations

from pydantic import Field

from spillgate.config.base import StrictModel


class TelemetrySettings(StrictModel):
    interval_s: float = Field(1.0, gt=0, description="Sampling period of NVML and engine /metrics.")
    stale_after_s: float = Field(5.0, gt=0, description="Older readings count as unknown.")
    nvml: bool = Field(True, description="Read GPU telemetry through NVML when available.")
    dcgm_url: str | None = Field(
        None, description="Kubernetes: NVIDIA DCGM exporter /metrics URL read for GPU "
        "utilization, memory and power instead of local NVML (the gateway pod has no GPU)."
    )
    dcgm_pod_prefix: str = Field(
        "", description="Only GPUs the DCGM exporter attributes to pods whose name starts "
        "with this (the engine pods); empty: every GPU it reports."
    )
    dcgm_namespace: str = Field("", description="Only GPUs of pods in this namespace (if set).")
    min_dwell_s: float = Field(
        5.0, ge=0, description="Overflow hysteresis: least time between two spill-state changes."
    )
    kv_cache_high: float = Field(
        0.9, gt=0, le=1, description="KV-cache usage at which a vLLM backend spills every request."
    )
    headroom: float = Field(
        0.8, gt=0, le=1, description="Share of a route's TTFT objective the admission limit "
        "plans to use (the rest absorbs estimation error)."
    )
