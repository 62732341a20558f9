"""One batch line through the normal request path: sensitivity, routing, ledger row, cost.

The line's ledger row id is fixed per line (store.line_request_id), its row is tagged
`batch=<batch id>`, and unless the batch may spill now the request is pinned to the local
tier (`x-spillgate-tier: local`): the router then never picks a paid API for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from spillgate import service
from spillgate.batches.store import ClaimedLine
from spillgate.classify import TAGS_HEADER, TIER_HEADER
from spillgate.errors import ApiError
from spillgate.types import JSON, Client

# The node cannot take the line now (the key's rate limit, the engine restarting or full):
# wait and retry, without counting it against the line.
NOT_NOW = frozenset({429, 503})
# The upstream failed: another attempt may succeed, up to batch.max_failures of them.
RETRYABLE = frozenset({408, 409, 500, 502, 504})
DEFAULT_WAIT_S = 1.0
BATCH_TAG = "batch"


@dataclass(frozen=True, slots=True)
class LineResult:
    status_code: int
    body: JSON
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code == 200

    @property
    def retryable(self) -> bool:
        return self.status_code in RETRYABLE

    @property
    def wait_s(self) -> float | None:
        """How long to hold off before claiming more lines; None: no need to."""
        if self.status_code not in NOT_NOW:
            return None
        return max(DEFAULT_WAIT_S, self.retry_after_s or 0.0)


def line_headers(line: ClaimedLine) -> dict[str, str]:
    headers = {TAGS_HEADER: f"{BATCH_TAG}={line.batch_id}"}
    if not line.spill:
        headers[TIER_HEADER] = "local"
    return headers


async def run_line(node: service.Node, line: ClaimedLine, local_only: bool) -> LineResult:
    """Serve the line's body as its owner; an ApiError becomes the line's error result."""
    body = {**line.body, "stream": False}  # a batch answer is one JSON body
    body.pop("stream_options", None)
    client = Client(key_id=line.owner or None, local_only=local_only)
    try:
        reply = await service.serve(node, line.endpoint, orjson.dumps(body),
                                    line_headers(line), client, line.request_id)
    except ApiError as exc:
        return LineResult(exc.status, exc.body(), exc.retry_after_s)
    if isinstance(reply, service.StreamReply):  # not reachable with stream false
        raise TypeError("a batch line was answered as a stream")
    return LineResult(200, reply.body)
