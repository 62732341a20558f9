"""The batch file formats (OpenAI's): input lines in, output and error lines out. Pure.

Input, one JSON object a line:
    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
Output (and error) file lines:
    {"id": "batch_req_…", "custom_id": "r1",
     "response": {"status_code": 200, "request_id": "…", "body": {...}} | null,
     "error": {"code": "…", "message": "…"} | null}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from spillgate.errors import InvalidRequest
from spillgate.types import JSON, Endpoint

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class InputLine:
    custom_id: str
    url: str
    body: JSON


def parse_input(content: bytes, max_lines: int) -> list[InputLine]:
    """Every line of an input file, or InvalidRequest naming the first bad line (1-based).

    Checked: UTF-8 JSON objects, a non-empty unique `custom_id`, `method` POST, `url` one
    of ENDPOINTS, `body` an object. Blank lines are skipped."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the file is not UTF-8 text", param="file") from None
    lines: list[InputLine] = []
    seen: set[str] = set()
    # Lines end at \n (or \r\n) only: str.splitlines would also split inside JSON strings
    # holding U+0085, U+2028 and the like, which JSON leaves unescaped.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        line = _parse_line(raw, number)
        if line.custom_id in seen:
            raise _bad(number, f"custom_id {line.custom_id!r} is used twice")
        seen.add(line.custom_id)
        lines.append(line)
        if len(lines) > max_lines:
            raise InvalidRequest(f"the file holds more than {max_lines} requests",
                                 param="file")
    if not lines:
        raise InvalidRequest("the file holds no requests", param="file")
    return lines


def _parse_line(raw: str, number: int) -> InputLine:
    try:
        item: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad(number, "not a JSON object") from None
    if not isinstance(item, dict):
        raise _bad(number, "not a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise _bad(number, f"custom_id must be a non-empty string of at most "
                           f"{MAX_CUSTOM_ID} characters")
    if item.get("method") != "POST":
        raise _bad(number, "method must be POST")
    url = item.get("url")
    if url not in ENDPOINTS:
        raise _bad(number, f"url must be one of {', '.join(ENDPOINTS)}")
    body = item.get("body")
    if not isinstance(body, dict):
        raise _bad(number, "body must be a JSON object")
    return InputLine(custom_id, str(url), body)


def _bad(number: int, why: str) -> InvalidRequest:
    return InvalidRequest(f"line {number} of the file: {why}", param="file",
                          code="invalid_batch_line")


def result_line(request_id: str, custom_id: str, status_code: int | None,
                body: JSON | None, error: JSON | None = None) -> bytes:
    """One output/error file line. `status_code` None: the line never ran (`error` says why)."""
    response = None if status_code is None else {
        "status_code": status_code, "request_id": request_id, "body": body}
    record = {"id": request_id, "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(record) + b"\n"
