"""A streamed answer's cost, told in the stream itself.

Headers leave before the first token, long before the cost exists, so a stream settles
before its last frames and carries its cost there:
  - when the client asked for `stream_options.include_usage`, the usage chunk gets one more
    top-level object, `"spillgate": {"cost_usd": "0.00001234", "backend": ...}` (the OpenAI
    SDKs keep unknown fields: `chunk.model_extra["spillgate"]` in Python);
  - always an SSE comment line `: x-spillgate-cost-usd=0.00001234` before `data: [DONE]`
    (or before the error event of a stream cut short): SSE clients skip comment lines, so
    it is invisible to an SDK and plain to anyone reading the raw stream.
The amount is formatted as the `x-spillgate-cost-usd` header of a plain answer.
"""

from __future__ import annotations

import orjson

from spillgate.ledger.record import RequestRecord, usd_text
from spillgate.types import JSON

COMMENT = b": x-spillgate-cost-usd="
DONE = b"data: [DONE]\n\n"


def cost_text(record: RequestRecord) -> str:
    return usd_text(record.cost_usd)


def comment(record: RequestRecord) -> bytes:
    return COMMENT + cost_text(record).encode() + b"\n\n"


def final_frames(record: RequestRecord, usage_chunk: JSON | None) -> list[bytes]:
    """The frames before `data: [DONE]` of a settled stream: the usage chunk (if the client
    asked for it) with the cost, and the cost comment."""
    frames = []
    if usage_chunk is not None:
        extra = {"cost_usd": cost_text(record), "backend": record.backend}
        frames.append(b"data: " + orjson.dumps({**usage_chunk, "spillgate": extra}) + b"\n\n")
    frames.append(comment(record))
    return frames


def closing(record: RequestRecord, usage_chunk: JSON | None) -> bytes:
    """The final frames and `data: [DONE]` as one piece: the client gets the end of a stream
    in one write (api/hot.py's `send_stream` sends it with the response's end)."""
    return b"".join(final_frames(record, usage_chunk)) + DONE
