"""Sensitivity detector: specific positives and hard negatives, request bodies, odd input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn

from spillgate.routing.sensitivity import ALL_CLASSES, SensitivityDetector


@pytest.fixture(scope="module")
def detector() -> SensitivityDetector:
    return SensitivityDetector()


POSITIVES = [
    # payment cards: every network, compact, spaced, dashed
    ("Visa 4111 1111 1111 1111 please", "payment_card"),
    ("visa13 4222222222222", "payment_card"),
    ("visa19 4000 0000 0000 0000 006", "payment_card"),
    ("mc 5555-5555-5555-4444.", "payment_card"),
    ("mc 2-series 2223 0031 2200 3222", "payment_card"),
    ("amex 3782 822463 10005", "payment_card"),
    ("diners 3056 930902 5904", "payment_card"),
    ("discover 6011111111111117", "payment_card"),
    ("jcb 3530111333300000", "payment_card"),
    ("maestro 12 digits 501800000009", "payment_card"),
    ("unionpay 6200000000000005 ok", "payment_card"),
    ('{"card": "4111111111111111"}', "payment_card"),
    # IBAN: several countries, spaced and compact
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", "iban"),
    ("to GB29NWBK60161331926819.", "iban"),
    ("FR14 2004 1010 0505 0001 3M02 606", "iban"),
    ("NL91ABNA0417164300", "iban"),
    ("Konto CH93 0076 2011 6238 5295 7", "iban"),
    # SSN
    ("ssn 123-45-6789", "us_ssn"),
    ("SSN: 536 22 1234", "us_ssn"),
    # email
    ("mail john.doe+tag@example.co.uk now", "email"),
    ("From: <ops@mail.internal-example.com>", "email"),
    ("mailto:jane@example.org", "email"),
    ("https://example.com/?to=jane@example.org", "email"),
    # phones: E.164 and national formats
    ("call +1 415 555 2671", "phone"),
    ("+14155552671", "phone"),
    ("call (415) 555-2671", "phone"),
    ("415-555-2671 is my cell", "phone"),
    ("UK office 020 7946 0958", "phone"),
    ("intl +44 20 7946 0958", "phone"),
    ("Berlin 030 123456", "phone"),
    ("Paris 01 42 68 53 00", "phone"),
    ("+33 1 42 68 53 00", "phone"),
    ("+49 (0) 30 1234567", "phone"),
    ("phone: 4155552671", "phone"),
    ("(415) 555-2671x204", "phone"),
    # secrets
    ("AKIAIOSFODNN7EXAMPLE", "secret"),
    ("aws ASIAY34FZKBOKMUTVV7A", "secret"),
    ("token ghp_" + "a1B2" * 9, "secret"),
    ("gho_" + "Z9" * 18, "secret"),
    ("github_pat_11ABCDEFG0123456789abc_" + "x" * 59, "secret"),
    ("OPENAI_API_KEY=sk-" + "Ab3" * 16, "secret"),
    ("sk-proj-" + "aB_3-" * 20, "secret"),
    ("sk-ant-api03-" + "Zz9_" * 23 + "AA", "secret"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "secret"),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "secret",
    ),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow...", "secret"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "secret"),
    ("DATABASE_URL=postgres://admin:hunter2@db.internal:5432/app", "secret"),
    ("redis://:s3cret@cache:6379/0", "secret"),
]


@pytest.mark.parametrize(("text", "cls"), POSITIVES)
def test_positive_is_detected_as_its_class(
    detector: SensitivityDetector, text: str, cls: str
) -> None:
    assert detector.scan([text]) == {cls}


HARD_NEGATIVES = [
    "logged at 2024-05-01 12:30:45 (epoch 1700000000, ms 1700000000123)",
    "due 05/01/2024, am 01.05.2024, 2024-05-01T12:30:45.123+02:00",
    "Order #48213991 shipped; PO 4500012345; invoice INV-20240501-0042",
    "ISBN 978-3-16-148410-0, ISBN-10 0-306-40615-2, 9780306406157, 0306406152",
    "request 123e4567-e89b-12d3-a456-426614174000",
    "hosts 10.0.12.7:8080, 192.168.100.200 and 2001:db8::8a2e:370:7334",
    "upgrade v1.2.3 to 10.15.7, build 1.2.3.4567",
    "costs $1,299.99 or 1.299,00 EUR or USD 12,345.67",
    "card 4111 1111 1111 1112 fails Luhn",
    "number 5555555555554445",
    "routing 021000021, EIN 12-3456789, compact 123456789",
    "placeholders 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000",
    "typo DE88 3704 0044 0532 0130 00",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "md5 d41d8cd98f00b204e9800998ecf8427e, commit 9f2c1ab",
    "-----BEGIN PUBLIC KEY----- and -----BEGIN CERTIFICATE-----",
    "clone https://octocat@github.com/org/repo.git or postgres://localhost:5432/app",
    "the risk-free rate, a task-oriented sk-style-naming-convention-here",
    "AKIA is the prefix; xoxo; eyJ alone",
    "ping @channel and @octocat, use icon@2x.png",
    "user@localhost is not routable",
    "coordinates 37.7749, -122.4194; pages 120-135; pi 3.14159265358979",
    "The quick brown fox jumps over the lazy dog. " * 20,
]


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negative_is_clean(detector: SensitivityDetector, text: str) -> None:
    assert detector.scan([text]) == frozenset()


def test_several_classes_across_texts(detector: SensitivityDetector) -> None:
    texts = ["write to jane@example.org", "card 4111-1111-1111-1111", "nothing here"]
    assert detector.scan(texts) == {"email", "payment_card"}


def test_every_class_in_one_text(detector: SensitivityDetector) -> None:
    text = (
        "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, "
        "jane@example.org, (415) 555-2671, key AKIAIOSFODNN7EXAMPLE"
    )
    assert detector.scan([text]) == ALL_CLASSES


def test_card_inside_a_longer_digit_run_is_not_a_card(detector: SensitivityDetector) -> None:
    assert detector.scan(["id 94111111111111111123"]) == frozenset()
    assert detector.scan(["x4111111111111111"]) == frozenset()


def test_iban_digits_are_not_also_read_as_a_card(detector: SensitivityDetector) -> None:
    # The spaced BBAN digits here happen to include Luhn-valid runs.
    for text in ("GB29 NWBK 6016 1331 9268 19", "DE89 3704 0044 0532 0130 00"):
        assert detector.scan([text]) == {"iban"}


def test_odd_input_is_skipped_not_raised(detector: SensitivityDetector) -> None:
    odd: list[Any] = [None, 42, b"4111111111111111", ["jane@example.org"], "", "\x00\ud800"]
    assert detector.scan(odd) == frozenset()


def test_huge_text_is_scanned(detector: SensitivityDetector) -> None:
    filler = "lorem ipsum 2024 dolor sit amet, v1.2.3 " * 25_000  # ~1 MB
    assert detector.scan([filler]) == frozenset()
    assert detector.scan([filler + " jane@example.org"]) == {"email"}


def test_repr_reveals_nothing(detector: SensitivityDetector) -> None:
    assert repr(detector) == "SensitivityDetector()"


# ---------------------------------------------------------------- properties

# Issuer prefixes of real networks; the detector deliberately ignores Luhn-valid numbers
# outside them (ISBN-13 "978…", epoch milliseconds "17…", trunk-prefixed "0…" numbers).
NETWORK_PREFIXES = [
    "4",
    "51",
    "55",
    "2221",
    "2720",
    "34",
    "37",
    "36",
    "3528",
    "6011",
    "65",
    "5018",
    "6759",
    "62",
    "2200",
]
PROSE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.", max_size=40)


@st.composite
def spaced_luhn_numbers(draw: st.DrawFn, valid: bool = True) -> str:
    prefix = draw(st.sampled_from(NETWORK_PREFIXES))
    length = draw(st.integers(min_value=13, max_value=19))
    body = prefix + draw(
        st.text(
            alphabet="0123456789",
            min_size=length - len(prefix) - 1,
            max_size=length - len(prefix) - 1,
        )
    )
    check = int(luhn.calc_check_digit(body))
    if not valid:
        check = (check + draw(st.integers(min_value=1, max_value=9))) % 10
    number = body + str(check)
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


@settings(max_examples=300, deadline=None)
@given(number=spaced_luhn_numbers(), before=PROSE, after=PROSE)
def test_any_spaced_luhn_number_in_prose_is_a_card(
    detector: SensitivityDetector, number: str, before: str, after: str
) -> None:
    assert "payment_card" in detector.scan([f"{before} {number} {after}"])


@settings(max_examples=300, deadline=None)
@given(number=spaced_luhn_numbers(valid=False), before=PROSE, after=PROSE)
def test_luhn_failing_numbers_are_never_cards(
    detector: SensitivityDetector, number: str, before: str, after: str
) -> None:
    assert "payment_card" not in detector.scan([f"{before} {number} {after}"])


# ---------------------------------------------------------------- request bodies

EMAIL = "jane@example.org"


def _chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


LOCATIONS: list[tuple[str, dict[str, Any]]] = [
    ("system message", _chat({"role": "system", "content": f"owner {EMAIL}"})),
    ("developer message", _chat({"role": "developer", "content": f"owner {EMAIL}"})),
    ("user string", _chat({"role": "user", "content": f"hi {EMAIL}"})),
    (
        "user text part",
        _chat(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}},
                    {"type": "text", "text": f"hi {EMAIL}"},
                ],
            }
        ),
    ),
    (
        "image_url url",
        _chat(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"https://img.example/?u={EMAIL}"}},
                ],
            }
        ),
    ),
    ("assistant message", _chat({"role": "assistant", "content": f"I emailed {EMAIL}"})),
    ("assistant refusal", _chat({"role": "assistant", "content": None, "refusal": f"not {EMAIL}"})),
    (
        "tool call arguments",
        _chat(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "send", "arguments": json.dumps({"to": EMAIL})},
                    },
                ],
            }
        ),
    ),
    (
        "legacy function_call",
        _chat(
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "send", "arguments": f'{{"to": "{EMAIL}"}}'},
            }
        ),
    ),
    ("tool result", _chat({"role": "tool", "tool_call_id": "c1", "content": f"sent {EMAIL}"})),
    (
        "tool result parts",
        _chat(
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": [{"type": "text", "text": f"sent {EMAIL}"}],
            }
        ),
    ),
    ("function result", _chat({"role": "function", "name": "send", "content": EMAIL})),
    (
        "tool description",
        _chat(
            {"role": "user", "content": "hi"},
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "send",
                        "description": f"mails {EMAIL}",
                        "parameters": {"type": "object"},
                    },
                },
            ],
        ),
    ),
    (
        "tool parameters schema",
        _chat(
            {"role": "user", "content": "hi"},
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "send",
                        "parameters": {
                            "type": "object",
                            "properties": {"to": {"type": "string", "default": EMAIL}},
                        },
                    },
                },
            ],
        ),
    ),
    (
        "legacy functions",
        _chat(
            {"role": "user", "content": "hi"},
            functions=[
                {"name": "send", "description": f"mails {EMAIL}", "parameters": {}},
            ],
        ),
    ),
    (
        "response_format schema",
        _chat(
            {"role": "user", "content": "hi"},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "string", "examples": [EMAIL]}},
            },
        ),
    ),
    ("completions prompt str", {"model": "m", "prompt": f"hi {EMAIL}"}),
    ("completions prompt list", {"model": "m", "prompt": ["a", f"hi {EMAIL}"]}),
    ("completions suffix", {"model": "m", "prompt": "a", "suffix": EMAIL}),
    ("embeddings input str", {"model": "m", "input": EMAIL}),
    ("embeddings input list", {"model": "m", "input": ["a", EMAIL]}),
    ("user field", _chat({"role": "user", "content": "hi"}, user=EMAIL)),
    ("metadata", _chat({"role": "user", "content": "hi"}, metadata={"owner": EMAIL})),
    # Positions a fixed list of fields missed: everything is scanned unless allowlisted.
    ("metadata key", _chat({"role": "user", "content": "hi"}, metadata={EMAIL: "x"})),
    ("nested metadata", _chat({"role": "user", "content": "hi"}, metadata={"a": {"b": [EMAIL]}})),
    ("tool_call_id", _chat({"role": "tool", "tool_call_id": EMAIL, "content": "ok"})),
    ("tool_choice name", _chat({"role": "user", "content": "hi"},
                               tool_choice={"type": "function", "function": {"name": EMAIL}})),
    ("extra_body", _chat({"role": "user", "content": "hi"}, extra_body={"note": EMAIL})),
    ("prompt_cache_key", _chat({"role": "user", "content": "hi"}, prompt_cache_key=EMAIL)),
    ("web_search_options", _chat({"role": "user", "content": "hi"},
                                 web_search_options={"user_location": {"city": EMAIL}})),
    ("prediction", _chat({"role": "user", "content": "hi"},
                         prediction={"type": "content", "content": EMAIL})),
    ("unknown message key", _chat({"role": "user", "content": "hi", "x_note": EMAIL})),
    ("unknown part key", _chat({"role": "user", "content": [{"type": "text", "text": "hi",
                                                              "note": EMAIL}]})),
    ("audio transcript", _chat({"role": "assistant", "audio": {"id": "a1",
                                                               "transcript": EMAIL}})),
    ("file part filename", _chat({"role": "user", "content": [
        {"type": "file", "file": {"filename": EMAIL, "file_id": "file-1"}}]})),
    ("text data URL", _chat({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:text/plain,mail%20" + EMAIL}}]})),
    ("base64 text data URL", _chat({"role": "user", "content": [
        {"type": "image_url", "image_url": {
            "url": "data:text/plain;base64," + base64.b64encode(EMAIL.encode()).decode()}}]})),
    ("model-shaped field elsewhere", _chat({"role": "user", "content": "hi"}, x={"model": EMAIL})),
]


@pytest.mark.parametrize(("where", "body"), LOCATIONS, ids=[w for w, _ in LOCATIONS])
def test_request_texts_reach_every_location(
    detector: SensitivityDetector, where: str, body: dict[str, Any]
) -> None:
    assert detector.scan_body(body) == {"email"}, where


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": [[1, 2, 3], [4, 5]]},
        {"model": "m", "prompt": [101, 2023, 102]},
        {"model": "m", "prompt": [[101, 2023, 102]]},
    ],
)
def test_token_id_prompts_are_unscannable(detector: SensitivityDetector, body: Any) -> None:
    # Only the tokenizer knows what token ids say: such a request must never spill.
    assert detector.scan_body(body) == {"token_ids"}


def test_binary_payloads_are_unscannable(detector: SensitivityDetector) -> None:
    pdf = base64.b64encode(b"%PDF-1.4\n\x00\x01\x02\xff" * 8).decode()
    audio = base64.b64encode(bytes(range(256))).decode()
    bodies = [
        _chat({"role": "user", "content": [{"type": "file", "file": {
            "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}}]}),
        _chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {
            "data": audio, "format": "wav"}}]}),
        _chat({"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": f"data:image/png;base64,{audio}"}}]}),  # claims PNG, is not one
    ]
    for body in bodies:
        assert detector.scan_body(body) == {"binary"}


def test_large_numbers_are_scanned_as_text(detector: SensitivityDetector) -> None:
    assert detector.scan_body({"model": "m", "x": {"card": 4111111111111111}}) == {
        "payment_card"}


def test_odd_shapes_are_scanned_not_raised(detector: SensitivityDetector) -> None:
    bodies: list[Any] = [
        {"model": "m", "messages": "not a list"},
        {"model": "m", "messages": [None, 3, {"role": "user", "content": 7}]},
        {"model": "m", "tools": [{"type": "function", "function": "nope"}]},
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                    ],
                }
            ],
        },
        "not a mapping",
    ]
    for body in bodies:
        assert detector.scan_body(body) == frozenset()


def test_clean_body_is_clean(detector: SensitivityDetector) -> None:
    body = _chat(
        {"role": "system", "content": "You are helpful. Today is 2024-05-01."},
        {"role": "user", "content": [{"type": "text", "text": "Summarise ISBN 978-3-16-148410-0"}]},
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Find a book",
                    "parameters": {"type": "object", "properties": {"isbn": {"type": "string"}}},
                },
            }
        ],
    )
    assert detector.scan_body(body) == frozenset()
