"""The batch file formats: any valid input file parses back to its lines, in order; any
file with one broken line is refused naming that line; result lines are OpenAI's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.batches.jsonl import ENDPOINTS, parse_input, result_line
from spillgate.batches.store import line_request_id, window_seconds
from spillgate.errors import InvalidRequest

ids = st.text(min_size=1, max_size=40)
values = st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)  # JSON's 64-bit integers
bodies = st.dictionaries(st.text(max_size=8), values, max_size=4)
lines = st.lists(st.tuples(ids, st.sampled_from(sorted(ENDPOINTS)), bodies), max_size=30,
                 unique_by=lambda t: t[0]).filter(bool)


def _file(items: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    return b"".join(orjson.dumps({"custom_id": c, "method": "POST", "url": u, "body": b})
                    + b"\n" for c, u, b in items)


@given(lines)
def test_a_valid_file_parses_to_its_lines_in_order(items: list[tuple[str, str, Any]]) -> None:
    parsed = parse_input(_file(items), max_lines=len(items))
    assert [(p.custom_id, p.url, p.body) for p in parsed] == items


@given(lines, st.data())
def test_one_broken_line_is_named(items: list[tuple[str, str, Any]], data: st.DataObject,
                                  ) -> None:
    broken = data.draw(st.integers(0, len(items) - 1))
    rows = _file(items).splitlines()
    rows[broken] = rows[broken].replace(b'"POST"', b'"GET"')
    with pytest.raises(InvalidRequest, match=f"line {broken + 1} of the file"):
        parse_input(b"\n".join(rows), max_lines=len(items))


def test_more_lines_than_allowed_are_refused() -> None:
    items = [(f"r{i}", "/v1/completions", {}) for i in range(3)]
    assert len(parse_input(_file(items), max_lines=3)) == 3
    with pytest.raises(InvalidRequest, match="more than 2"):
        parse_input(_file(items), max_lines=2)


def test_result_lines_have_openai_shape() -> None:
    ok = orjson.loads(result_line("batch_req_x_0", "a", 200, {"choices": []}))
    assert ok == {"id": "batch_req_x_0", "custom_id": "a", "error": None,
                  "response": {"status_code": 200, "request_id": "batch_req_x_0",
                               "body": {"choices": []}}}
    never = orjson.loads(result_line("batch_req_x_1", "b", None, None,
                                     {"code": "batch_expired", "message": "late"}))
    assert never["response"] is None and never["error"]["code"] == "batch_expired"


@given(st.integers(1, 7 * 24), st.sampled_from(["h", "m", "s"]))
def test_completion_windows_up_to_a_week(amount: int, unit: str) -> None:
    seconds = amount * {"h": 3600, "m": 60, "s": 1}[unit]
    assert window_seconds(f"{amount}{unit}") == seconds


def test_line_ids_are_fixed_per_line_and_distinct() -> None:
    assert line_request_id("batch_abc", 3) == line_request_id("batch_abc", 3)
    assert len({line_request_id("batch_abc", n) for n in range(1000)}) == 1000
