"""Each encoding a value can hide behind, read back before matching (one case per form the
issue lists), and the budget that keeps a scan bounded."""

from __future__ import annotations

import base64
import json

import pytest
from stdnum import luhn

from spillgate.routing.sensitivity import SensitivityDetector
from spillgate.routing.sensitivity_normalize import fold, views

CARD = "4111111111111111"
EMAIL = "jane.doe@example.org"


@pytest.fixture(scope="module")
def detector() -> SensitivityDetector:
    return SensitivityDetector()


def _groups(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _wide(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def _luhn(body: str) -> str:
    return body + luhn.calc_check_digit(body)


ENCODED = [
    (_groups(CARD, "\u00a0"), "payment_card"),  # NBSP
    (_groups(CARD, "\u202f"), "payment_card"),  # narrow NBSP
    (_groups(CARD, "."), "payment_card"),
    (_groups(CARD, "/"), "payment_card"),
    (_groups(CARD, "  "), "payment_card"),
    (_groups(CARD, "\u200b"), "payment_card"),  # zero-width space
    (_groups(CARD, "\u00ad"), "payment_card"),  # soft hyphen
    (_wide(CARD), "payment_card"),  # full-width digits
    ("JCB " + _luhn("18001234567890"), "payment_card"),  # 15-digit JCB 1800
    ("JCB " + _luhn("21311234567890"), "payment_card"),  # 15-digit JCB 2131
    (_groups(_luhn("400000000000000000"), " "), "payment_card"),  # 19-digit Visa
    ("iban de89 3704 0044 0532 0130 00", "iban"),
    ("de89370400440532013000", "iban"),
    ("call +44\u00a020\u00a07946\u00a00958", "phone"),
    ("SSN: 536228475", "us_ssn"),
    ("SSN 536.22.8475", "us_ssn"),
    ("jane.doe%40example.org", "email"),
    ("jane.doe&#64;example.org", "email"),
    ("jane.doe\uff20example.org", "email"),
    (json.dumps({"to": EMAIL}).replace("@", "\\u0040"), "email"),  # tool-argument JSON
    ("jane.doe@exam\u200bple.org", "email"),
    (base64.b64encode(EMAIL.encode()).decode(), "email"),
    ("write to jane dot doe at example dot org", "email"),
    ("jane [at] example [dot] org", "email"),
    ("telefon 0171 / 1234567", "phone"),
    ("(555) 010-0000", "phone"),  # unassigned range, still a number a user typed
]


@pytest.mark.parametrize(("text", "cls"), ENCODED)
def test_encoded_value_is_detected(detector: SensitivityDetector, text: str, cls: str) -> None:
    assert cls in detector.scan([f"please use {text} today"])


def test_values_split_across_messages_are_found(detector: SensitivityDetector) -> None:
    assert detector.scan(["my card is 4111 1111", "1111 1111 thanks"]) == {"payment_card"}
    assert detector.scan(["mail jane.doe@exa", "mple.org"]) == {"email"}
    assert detector.scan(["4111 1111", "1111", "1111 ok"]) == {"payment_card"}


@pytest.mark.parametrize(
    "text",
    ["we looked at example.com together", "meet at the dot com office",
     "v1.2.3 at 10:30", "\uff21\uff22\uff23 full-width letters", "100%25 sure &amp; done"],
)
def test_decoding_does_not_invent_values(detector: SensitivityDetector, text: str) -> None:
    assert detector.scan([text]) == frozenset()


def test_fold_reads_unicode_forms_as_ascii() -> None:
    assert fold(_wide("4111") + "\u00a0" + _wide("1111") + "\u200b") == "4111 1111"
    assert fold("a\u2013b") == "a-b"


def test_views_decode_nested_encodings() -> None:
    inner = "jane%40example.org"
    assert "jane@example.org" in views(base64.b64encode(inner.encode()).decode())


def test_budget_fails_closed() -> None:
    slow = SensitivityDetector(budget_s=0.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "order 1234567 " * 50}]}
    assert slow.scan_body(body) == {"scan_budget"}


@pytest.mark.parametrize("value", ["card 4000000000000002", "jane.doe@example.org"])
def test_json_escapes_typed_inside_tool_arguments_are_read(
    detector: SensitivityDetector, value: str,
) -> None:
    """Found by the boundary property test: escapes typed inside a JSON string arrive escaped
    once more (`\\\\u0063`) in the tool-call arguments the provider receives."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in value)
    arguments = json.dumps({"q": escaped})
    assert "\\\\u" in arguments
    assert detector.scan([arguments])


@pytest.mark.parametrize("text", ["mail aa at their dot com", "ask bob at home dot org",
                                  "x [at] the [dot] com"])
def test_spelled_emails_with_word_like_domains_are_found(
    detector: SensitivityDetector, text: str,
) -> None:
    """Found by the boundary property test: a domain that is also an English word."""
    assert "email" in detector.scan([text])
