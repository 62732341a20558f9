"""The cost a reply tells (header, stream comment) is the cost its ledger row keeps.

A client reconciling its `x-spillgate-cost-usd` headers against `spillgate report` must get the
same digits. The ledger keeps 1e-10 USD; rounding the raw amount straight to 8 digits differed
from the row in the last digit whenever the dropped digits straddled a half (CI caught
0.00001057 told vs 0.00001056 kept).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select

from spillgate.ledger.record import RequestRecord, usd_text
from spillgate.ledger.schema import Money
from spillgate.stream_cost import comment

AMOUNTS = st.decimals(min_value=0, max_value=100, places=16, allow_nan=False,
                      allow_infinity=False)


def stored(amounts: list[Decimal]) -> list[Decimal]:
    """The amounts as a real SQLite file's money column gives them back."""
    table = Table("money", MetaData(), Column("id", Integer, primary_key=True),
                  Column("usd", Money(), nullable=False))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "usd": a} for i, a in enumerate(amounts)])
        return [r.usd for r in conn.execute(select(table).order_by(table.c.id))]


@given(st.lists(AMOUNTS, min_size=1, max_size=20))
def test_the_told_cost_is_the_stored_cost_to_8_digits(amounts: list[Decimal]) -> None:
    for amount, kept in zip(amounts, stored(amounts), strict=True):
        assert usd_text(amount) == f"{kept:.8f}", (amount, kept)


@pytest.mark.parametrize(("raw", "told"), [
    (Decimal("0.00001056500001"), "0.00001056"),  # kept as ...0.0000105650: half to even
    (Decimal("0.0000000050001"), "0.00000000"),  # kept as 0.0000000050
    (Decimal("0.00001057500001"), "0.00001058"),
    (Decimal("0.0000105651"), "0.00001057"),  # above the half: up
])
def test_a_stream_comment_tells_the_stored_digits(raw: Decimal, told: str) -> None:
    record = RequestRecord("id", None, "r", True, 0.0, cost_usd=raw)
    assert comment(record) == f": x-spillgate-cost-usd={told}\n\n".encode()
