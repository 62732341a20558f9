"""The cache's parts alone: keys and scope, the bounded store, the vector index, the guards,
and the step's decisions (with the real embedder), including property tests over tenants."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.cache.guards import agree, disagreement, facts_of
from spillgate.cache.index import ScopeIndex
from spillgate.cache.keys import build_keys, tenant_of
from spillgate.cache.replay import StreamCollector, sse_events
from spillgate.cache.step import CacheStep, RoutePolicy
from spillgate.cache.store import ResponseCache
from spillgate.embeddings import load_local_embedder
from spillgate.ledger.record import RequestRecord, Usage


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "r", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": text}],
            "temperature": 0, **extra}


def _answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            "model": "m"}


# --- keys -----------------------------------------------------------------------------------
def test_fields_that_shape_the_answer_change_the_key_and_stream_settings_do_not() -> None:
    base = build_keys("t", "r", _body("hi"))
    assert build_keys("t", "r", _body("hi", stream=True, user="u",
                                      stream_options={"include_usage": True})) == base
    for extra in ({"max_tokens": 5}, {"seed": 1}, {"top_p": 0.5}, {"tools": []},
                  {"response_format": {"type": "json_object"}}, {"unknown_field": 1}):
        changed = build_keys("t", "r", _body("hi", **extra))
        assert changed.exact != base.exact and changed.semantic_scope != base.semantic_scope
    other_system = _body("hi")
    other_system["messages"][0]["content"] = "Be verbose."
    assert build_keys("t", "r", other_system).semantic_scope != base.semantic_scope
    assert build_keys("t", "r2", _body("hi")).exact != base.exact


def test_the_semantic_scope_leaves_out_only_the_last_user_text() -> None:
    a, b = build_keys("t", "r", _body("hi")), build_keys("t", "r", _body("hello"))
    assert a.exact != b.exact and a.semantic_scope == b.semantic_scope
    assert (a.query, b.query) == ("hi", "hello")
    assistant_last = {"model": "r", "messages": [{"role": "assistant", "content": "x"}]}
    assert build_keys("t", "r", assistant_last).semantic_scope is None


@given(st.text(max_size=12), st.text(max_size=12))
def test_a_namespace_and_a_key_never_share_a_tenant(key: str, namespace: str) -> None:
    assert tenant_of(key, None) != tenant_of(None, namespace) or not (key or namespace)
    assert tenant_of(key or "k", None) != tenant_of("other-" + (key or "k"), None)


# --- store ----------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_store_evicts_least_recently_used_by_entries_and_by_bytes() -> None:
    cache = ResponseCache(ttl_s=60, max_entries=3, max_bytes=10**6, dims=1)
    keys = [build_keys("t", "r", _body(f"q{i}")) for i in range(4)]
    for k in keys[:3]:
        cache.put(k, _answer("a"), avoided_usd=Decimal(0), saved_tokens=0)
    assert cache.get(keys[0].exact) is not None  # now most recently used
    cache.put(keys[3], _answer("a"), avoided_usd=Decimal(0), saved_tokens=0)
    assert [k.exact in cache for k in keys] == [True, False, True, True]
    one = cache.nbytes // 3
    small = ResponseCache(ttl_s=60, max_entries=100, max_bytes=2 * one + one // 2, dims=1)
    for k in keys:
        small.put(k, _answer("a"), avoided_usd=Decimal(0), saved_tokens=0)
    assert len(small) == 2 and small.nbytes <= small.max_bytes
    assert not small.put(keys[0], _answer("x" * 10_000), avoided_usd=Decimal(0),
                         saved_tokens=0)


def test_an_entry_expires_after_its_ttl_and_leaves_the_index() -> None:
    clock = Clock()
    cache = ResponseCache(ttl_s=10, max_entries=10, max_bytes=10**6, dims=2, clock=clock)
    keys = build_keys("t", "r", _body("hello"))
    vector = np.array([1.0, 0.0], dtype=np.float32)
    cache.put(keys, _answer("a"), avoided_usd=Decimal(1), saved_tokens=5, vector=vector,
              facts=facts_of("hello"))
    clock.now = 9.9
    assert cache.find(keys, vector, facts_of("hello"), 0.9) is not None
    clock.now = 10.0
    assert cache.find(keys, vector, facts_of("hello"), 0.9) is None
    assert len(cache) == 0 and len(cache.index) == 0


# --- index ----------------------------------------------------------------------------------
def test_the_index_ranks_by_cosine_and_reuses_removed_slots() -> None:
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(50, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index = ScopeIndex(8)
    slots = [index.add(f"k{i}", row) for i, row in enumerate(rows)]
    query = rows[3]
    expected = sorted(range(50), key=lambda i: -float(rows[i] @ query))[:4]  # by hand
    assert [k for k, _ in index.search(query, -1.0, k=4)] == [f"k{i}" for i in expected]
    index.remove(slots[3])
    assert "k3" not in [k for k, _ in index.search(query, -1.0, k=50)]
    assert index.add("new", rows[3]) == slots[3] and index.size == 50


# --- guards ---------------------------------------------------------------------------------
def test_guards_tell_swapped_facts_apart_and_let_rewordings_through() -> None:
    same = [("Convert 1,000 km to miles", "how many miles is 1000 km?"),
            ("Who wrote Dune?", "who is the author of dune"),
            ("Isn't it late?", "Is it not late?"),
            ("What is the capital of France? Thanks!", "capital of France please")]
    different = [("Is it safe?", "Is it not safe?"), ("Convert 5 km", "Convert 6 km"),
                 ("Who wrote Dune?", "Who wrote Emma?"), ("5 km in miles", "5 kg in miles"),
                 ("largest city in Peru", "smallest city in Peru"),
                 ('define "foo"', 'define "bar"'), ("When did it happen?", "Why did it happen?"),
                 ("Is rice good for dogs?", "Is rice bad for dogs?"),
                 ("Convert five km", "Convert 6 km")]
    for a, b in same:
        assert agree(facts_of(a), facts_of(b)), (a, b)
    for a, b in different:
        assert not agree(facts_of(a), facts_of(b)), (a, b)


def test_the_refusing_guard_is_named_for_the_metrics() -> None:
    cases = {("Is it safe?", "Is it not safe?"): "negation",
             ("Convert 5 km", "Convert 6 km"): "numbers",
             ("5 km in miles", "5 kg in miles"): "units",
             ("Who wrote Dune?", "Who wrote Emma?"): "names",
             ("largest city in Peru", "smallest city in Peru"): "opposites",
             ("When did it happen?", "Why did it happen?"): "opposites",
             ("Who wrote Dune?", "who is the author of dune"): None}
    for (a, b), guard in cases.items():
        assert disagreement(facts_of(a), facts_of(b)) == guard, (a, b)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_questions_differing_only_in_a_number_never_agree(a: int, b: int) -> None:
    same = agree(facts_of(f"What is {a} times 3?"), facts_of(f"What is {b} times 3?"))
    assert same == (a == b)


@given(st.sampled_from(["Is it safe to swim here?", "Can I run today?", "Does it work?"]),
       st.sampled_from(["not", "never"]))
def test_a_negated_question_never_agrees_with_the_plain_one(question: str, word: str) -> None:
    first, second, rest = question.split(" ", 2)
    negated = f"{first} {second} {word} {rest}"  # Is it not …, Can I never …, Does it not …
    assert not agree(facts_of(question), facts_of(negated))


# --- the step -------------------------------------------------------------------------------
def _step(mode: str = "semantic") -> CacheStep:
    embedder = load_local_embedder()
    cache = ResponseCache(ttl_s=60, max_entries=1000, max_bytes=10**7, dims=embedder.dims)
    policy = RoutePolicy(mode)  # type: ignore[arg-type]
    return CacheStep(cache, {"r": policy}, 0.905, embedder)


def _settled(status: int = 200, cost: str = "0.002") -> RequestRecord:
    record = RequestRecord("id", None, "r", False, 0.0, status=status,
                           cost_usd=Decimal(cost))
    record.usage = Usage(3, 0, 2)
    return record


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3", None]),
                          st.sampled_from([None, "ns1", "ns2"]),
                          st.sampled_from(["What is the capital of France?",
                                           "Which city is the capital of France?",
                                           "capital of France?"])), min_size=1, max_size=12))
def test_no_hit_ever_crosses_tenants(requests: list[tuple[str | None, str | None, str]]) -> None:
    """Whatever keys and namespaces ask whatever paraphrases, a hit only ever serves an
    answer stored by the same tenant (the answer records its tenant here)."""
    step = _step()
    for key, namespace, text in requests:
        tenant = tenant_of(key, namespace)
        ticket = step.lookup("chat/completions", "r", _body(text), {}, tenant, False)
        if ticket.hit is not None:
            assert ticket.hit.entry.answer["choices"][0]["message"]["content"] == tenant
        else:
            step.remember(ticket, {**_answer(tenant), "id": "x"}, _settled())


def test_sensitive_requests_are_bypassed_and_leave_nothing() -> None:
    step = _step("exact")
    ticket = step.lookup("chat/completions", "r", _body("my SSN is 123-45-6789"), {}, "t",
                         sensitive=True)
    assert ticket.status == "bypass" and not ticket.store
    step.remember(ticket, _answer("x"), _settled())
    assert len(step.cache) == 0


def test_only_successful_answers_without_tool_calls_are_stored() -> None:
    step = _step("exact")
    ticket = step.lookup("chat/completions", "r", _body("q"), {}, "t", False)
    step.remember(ticket, _answer("x"), _settled(status=502))
    tool = _answer("")
    tool["choices"][0]["message"]["tool_calls"] = [{"id": "c", "type": "function",
                                                    "function": {"name": "f", "arguments": "{}"}}]
    step.remember(ticket, tool, _settled())
    assert len(step.cache) == 0
    step.remember(ticket, _answer("x"), _settled(cost="0.25"))
    entry = step.cache.entries()[0]
    assert (entry.avoided_usd, entry.saved_tokens) == (Decimal("0.25"), 5)


def test_a_stream_is_stored_only_when_every_choice_finished() -> None:
    collector = StreamCollector()
    collector.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}}]})
    collector.add({"choices": [{"index": 0, "delta": {"content": "llo"}}]})
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert collector.answer(usage) is None  # no finish reason yet: cut
    collector.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    answer = collector.answer(usage)
    assert answer is not None and answer["choices"][0]["message"]["content"] == "Hello"


def test_replayed_events_are_well_formed_sse_ending_in_done() -> None:
    events = sse_events(_answer("hi"), "m", include_usage=True)
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n" and b'"usage"' in events[-2]
    assert b'"usage"' not in b"".join(sse_events(_answer("hi"), "m", include_usage=False))


def test_a_scope_that_grows_into_a_graph_still_finds_what_a_full_scan_finds() -> None:
    """Through churn (the oldest evicted while new entries arrive, so the graph reuses the
    storage of deleted ones), the graph's answers stay those of a scan by hand."""
    rng = np.random.default_rng(16)
    rows = rng.normal(size=(600, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cache = ResponseCache(ttl_s=60, max_entries=250, max_bytes=10**8, dims=16, graph_from=64)
    keys = [build_keys("t", "r", _body(f"question {i}")) for i in range(600)]
    for k, row in zip(keys, rows, strict=True):
        cache.put(k, _answer("a"), avoided_usd=Decimal(0), saved_tokens=0, vector=row,
                  facts=facts_of("question"))
    assert len(cache) == 250 and len(cache.index) == 250  # the 350 oldest left both
    scope = keys[0].semantic_scope
    assert scope is not None
    live = range(350, 600)
    for q in (3, 120, 400, 599):
        found = cache.index.search(scope, rows[q], threshold=-1.0)
        expected = sorted(live, key=lambda i: -float(rows[i] @ rows[q]))[:8]  # by hand
        assert [k for k, _ in found] == [keys[i].exact for i in expected]
        if q in live:  # still cached: its own row is the best match
            assert abs(found[0][1] - 1.0) < 1e-5


@pytest.mark.parametrize("threads", [1, 2])
def test_a_bulk_load_into_a_graph_finds_what_a_full_scan_finds(threads: int) -> None:
    """`put_many` (the benchmark's batch fill) moves a scope's scanned entries into the graph
    with the new ones; the bounds still hold and the answers are a scan's by hand. Built on
    one thread the graph finds the true top 8 of every query; built on two, usearch's
    concurrent inserts link a few nodes less well, so it is held to recall instead (mean
    recall@8 over all 400 queries: 0.972-1.0 in 150 loads, 0.994 on average)."""
    rng = np.random.default_rng(1601)
    rows = rng.normal(size=(400, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cache = ResponseCache(ttl_s=60, max_entries=300, max_bytes=10**8, dims=16, graph_from=64)
    keys = [build_keys("t", "r", _body(f"question {i}")) for i in range(400)]
    for k, row in zip(keys[:20], rows[:20], strict=True):  # a small scope: scanned
        cache.put(k, _answer("a"), avoided_usd=Decimal(0), saved_tokens=0, vector=row,
                  facts=facts_of("question"))
    scope = keys[0].semantic_scope
    assert scope is not None and cache.index.kind(scope) == "scan"
    cache.put_many([(k, _answer("b"), row, facts_of("question"))
                    for k, row in zip(keys[20:], rows[20:], strict=True)], threads=threads)
    assert cache.index.kind(scope) == "graph"
    assert len(cache) == 300 and len(cache.index) == 300  # the 100 oldest left both
    live = range(100, 400)
    recalls = []
    for q in range(400):
        found = [k for k, _ in cache.index.search(scope, rows[q], threshold=-1.0)]
        expected = [keys[i].exact
                    for i in sorted(live, key=lambda i: -float(rows[i] @ rows[q]))[:8]]  # by hand
        if threads == 1:
            assert found == expected
        recalls.append(len(set(found) & set(expected)) / 8)
    assert sum(recalls) / len(recalls) >= 0.93
    hit = cache.find(keys[399], None, None, 0.9)
    assert hit is not None and hit.kind == "exact"


def test_a_chunk_the_collector_cannot_read_only_stops_the_store() -> None:
    collector = StreamCollector()
    collector.add({"choices": [{"index": "x", "delta": {"content": "a"}}]})
    collector.add({"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]})
    assert collector.broken and collector.answer({"prompt_tokens": 1}) is None
