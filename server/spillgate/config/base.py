"""The base of every settings section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A section of the node config: an unknown key is an error, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
