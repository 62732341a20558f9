"""`cost:` the hardware profile and how many of its units this node has."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from pydantic import Field, model_validator

from spillgate.config.base import StrictModel


class CostSettings(StrictModel):
    hardware_profile: str = Field("cpu-node", description="Profile name in hardware.yaml.")
    units: int = Field(
        1, ge=0, description="Units of that profile in this node (GPUs, or CPU nodes). 0 is "
        "refused unless the profile costs nothing.",
    )
    pool: str | None = Field(
        None, min_length=1, max_length=128,
        description="Name of the hardware this process serves from, shared by every gateway "
        "process in front of the same engines (replicas, or processes on one host). The "
        "processes of one pool on one ledger book its hardware cost once: one books every "
        "second, the others only the share their requests carry. Default: the host name.",
    )

    @model_validator(mode="before")
    @classmethod
    def _gpus_alias(cls, data: Any) -> Any:
        """`gpus` was the old name of `units`: accepted, with a warning, never both."""
        if not isinstance(data, dict) or "gpus" not in data:
            return data
        data = dict(data)
        if "units" in data:
            raise ValueError("cost.gpus is the deprecated name of cost.units: set only units")
        warnings.warn("cost.gpus is deprecated: rename it to cost.units", DeprecationWarning,
                      stacklevel=2)
        # Logged under the config loader's name, as before the sections left settings.py.
        logging.getLogger("spillgate.settings").warning(
            "cost.gpus is deprecated: rename it to cost.units")
        data["units"] = data.pop("gpus")
        return data
