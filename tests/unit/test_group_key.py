"""group_key is memoised: whatever it was asked before, it must give the key worked out
from scratch, for look-alike arguments above all (equal as cache keys, not equal as text:
1, 1.0 and True; None and ""), unhashable tags and tags given as JSON text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from spillgate.ledger.group_key import GroupKey, _group_key, group_key, hour_of

T = datetime(2026, 12, 2, 13, 45, 7, 123, tzinfo=UTC)
LOOK_ALIKES: list[tuple[Any, ...]] = [
    (T, "k1", {"team": "a"}, "local", "", "local_ok"),
    (T, "k1", {"team": 1}, "local", "", "local_ok"),
    (T, "k1", {"team": 1.0}, "local", "", "local_ok"),
    (T, "k1", {"team": True}, "local", "", "local_ok"),
    (T, "k1", {"team": "1"}, "local", "", "local_ok"),
    (T, "k1", {1: "a"}, "local", "", "local_ok"),
    (T, "k1", {"team": ["a"]}, "local", "", "local_ok"),  # unhashable
    (T, "k1", '{"team":"a"}', "local", "", "local_ok"),
    (T, "k1", None, "local", "", "local_ok"),
    (T, None, {}, None, None, None),
    (T, "", {}, "", "", ""),
    (T, 1, {}, "api", True, "overflow"),
    (T, 1.0, {}, "api", 1, "overflow"),
    (T, True, {}, "api", "email", "overflow:queue"),
    (T.astimezone(timezone(timedelta(hours=2))), "k1", {"b": "2", "a": "1"}, "api", "",
     "overflow"),
    (T.replace(tzinfo=None), "k1", {"a": "1", "b": "2"}, "api", "", "overflow"),
]


def _fresh(args: tuple[Any, ...]) -> GroupKey:
    hour, *rest = args
    return _group_key.__wrapped__(hour_of(hour), *rest)


def test_look_alike_rows_get_their_own_keys() -> None:
    _group_key.cache_clear()
    for _ in range(2):  # the second time from the cache
        for args in LOOK_ALIKES:
            key = group_key(*args)
            assert key == _fresh(args)
            assert [type(v) for v in vars_of(key)] == [type(v) for v in vars_of(_fresh(args))]
    assert group_key(*LOOK_ALIKES[1]).tags != group_key(*LOOK_ALIKES[2]).tags


def vars_of(key: GroupKey) -> list[Any]:
    return [key.hour, key.key_id, key.tags, key.tier, key.sensitive, key.spill]


scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2) | st.text(max_size=3)
tags = st.none() | st.dictionaries(st.text(max_size=2) | st.integers(0, 2),
                                   scalars | st.lists(st.text(max_size=1), max_size=1),
                                   max_size=3)  # fmt: skip


@given(st.lists(st.tuples(st.datetimes(timezones=st.none() | st.just(UTC)), scalars, tags,
                          scalars, st.text(max_size=3), st.text(max_size=12)),
                min_size=1, max_size=8))  # fmt: skip
def test_any_rows_in_any_order_get_the_key_worked_out_afresh(rows: list[tuple[Any, ...]]) -> None:
    for args in rows + rows:
        assert _outcome(group_key, args) == _outcome(_fresh, args)


def _outcome(make: Any, args: tuple[Any, ...]) -> Any:
    try:
        return make(*args) if make is group_key else make(args)
    except ValueError as error:  # a sensitivity that is broken JSON: the same error either way
        return type(error)
