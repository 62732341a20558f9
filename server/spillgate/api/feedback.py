"""POST /v1/feedback: a client scores the answer to one of its own requests.

Body: `{"request_id": "<x-request-id of the answer>", "score": 0.0 .. 1.0}` — 1 the answer
was good, 0 it was bad (a thumbs up/down is 1/0; anything between is a graded score, so the
mean over requests reads as a quality rate). Authenticated like the completions routes; a
key can rate only the requests it made: any other id answers 404 `request_not_found`, the
same as an id that never existed. A second rating of a request replaces the first.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from spillgate.api.deps import client_of, read_body, request_id_of
from spillgate.errors import InvalidRequest, NotFound, ServiceUnavailable
from spillgate.ledger import feedback
from spillgate.ledger.store import Ledger
from spillgate.web import JSONResponse

FEEDBACK_MAX_BODY_BYTES = 4096
router = APIRouter(prefix="/v1")


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128, description="The answer's "
                            "x-request-id.")
    score: StrictFloat | StrictInt = Field(ge=0, le=1, description="1 good, 0 bad.")


def parse_feedback(raw: bytes) -> Feedback:
    """The body, or a 400 naming the field at fault (never echoing the input)."""
    try:
        parsed = Feedback.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = str(first["loc"][0]) if first["loc"] else None  # not the union's branch
        raise InvalidRequest(f"invalid feedback: {field or 'body'}: {first['msg']}",
                             param=field) from None
    if not math.isfinite(parsed.score):
        raise InvalidRequest("invalid feedback: score must be a number in [0, 1]",
                             param="score")
    return parsed


def _ledger_of(request: Request) -> Ledger:
    try:
        ledger: Ledger = request.app.state.accountant.ledger
    except (AttributeError, RuntimeError):  # not open yet
        raise ServiceUnavailable("the cost ledger is not open") from None
    return ledger


@router.post("/feedback")
async def post_feedback(request: Request) -> Response:
    rid = request_id_of(request)
    client = await client_of(request)
    body = parse_feedback(await read_body(request, FEEDBACK_MAX_BODY_BYTES))
    if not await feedback.rate(_ledger_of(request), body.request_id, client.key_id,
                               float(body.score)):
        raise NotFound("no request with this id was made with your key",
                       param="request_id", code="request_not_found")
    return JSONResponse({"object": "feedback", "request_id": body.request_id,
                         "score": float(body.score)}, headers={"x-request-id": rid})
