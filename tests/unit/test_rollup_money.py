"""The rollup takes a Decimal amount as it is instead of through its text: the same
amount, digits, exponent and sign included, as Decimal(str(amount)) gave."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from spillgate.ledger import rollup
from spillgate.ledger.record import ledger_money


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**6, max_value=10**6)
       | st.floats(-10, 10) | st.integers(-10**6, 10**6)
       | st.sampled_from([Decimal("-0"), Decimal("0E-12"), Decimal("1E+3")]))  # fmt: skip
def test_money_is_the_amount_through_its_text(amount: Decimal | float | int) -> None:
    expected = ledger_money(Decimal(str(amount)))
    got = rollup._money(amount)
    assert (str(got), got) == (str(expected), expected)
