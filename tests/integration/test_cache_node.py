"""The response cache through the node: hits never reach the provider, and what must never be
cached is not (sensitive, errors, cut streams, tool calls, no-store, sampled requests).

The fake provider echoes the last user message, so an answer shows which question it answers;
its request log shows exactly which requests left the node."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from spillgate.fakes.provider_faults import Fault
from spillgate.tenancy.keys import create_key
from tests.integration.cache_node import cache_node

pytestmark = pytest.mark.integration
CACHE = "x-spillgate-cache"


def _content(response_json: dict[str, object]) -> str:
    choices = response_json["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["message"]["content"])


async def test_an_exact_repeat_is_served_from_the_cache_and_never_reaches_the_provider(
        tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        first = await node.ask("What is the capital of France?")
        second = await node.ask("What is the capital of France?")
        assert first.status_code == second.status_code == 200
        assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
        assert node.upstream_calls() == 1
        assert _content(second.json()) == _content(first.json())
        assert second.json()["usage"] == first.json()["usage"]
        assert second.json()["id"] != first.json()["id"]
        assert second.headers["x-spillgate-backend"] == "cache"
        assert second.headers["x-spillgate-cost-usd"] == f"{0:.8f}"


async def test_a_hit_is_a_ledger_row_costing_nothing_that_keeps_the_avoided_cost(
        tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        await node.ask("Name three primes.")
        await node.ask("Name three primes.")
        paid, hit = await node.rows()
        assert paid["cache"] == "" and paid["cost_usd"] > 0
        assert hit["cache"] == "exact" and hit["tier"] == "cache"
        assert hit["cost_usd"] == Decimal(0)
        assert hit["prompt_tokens"] == hit["completion_tokens"] == 0
        assert hit["avoided_usd"] == paid["cost_usd"]
        assert hit["saved_tokens"] == paid["prompt_tokens"] + paid["completion_tokens"]
        assert hit["status"] == 200 and hit["state"] == "settled"


async def test_a_hit_replays_as_a_stream_the_openai_sdk_reads(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        first = await node.ask("Tell me about otters.")
        stream = await node.sdk().chat.completions.create(
            model="exact", messages=[{"role": "user", "content": "Tell me about otters."}],
            temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == _content(first.json())
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        usage = chunks[-1].usage
        assert usage is not None and not chunks[-1].choices
        assert usage.completion_tokens == first.json()["usage"]["completion_tokens"]
        assert len({c.id for c in chunks}) == 1 and chunks[0].id != first.json()["id"]
        assert node.upstream_calls() == 1


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_streamed_hit_tells_its_cost_like_every_stream(
        tmp_path: Path, include_usage: bool) -> None:
    """A client reading costs from streams (the comment before [DONE], the usage chunk's
    `spillgate` object) gets them from a hit too: zero, as its row keeps."""
    async with cache_node(tmp_path) as node:
        await node.ask("Tell me about otters.")
        body = {"model": "exact", "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": "Tell me about otters."}],
                "stream_options": {"include_usage": include_usage}}
        reply = await node.client.post("/v1/chat/completions", json=body)
        assert reply.headers[CACHE] == "hit"
        lines = [line for line in reply.text.splitlines() if line]
        assert lines[-2:] == [": x-spillgate-cost-usd=0.00000000", "data: [DONE]"]
        usage_chunks = [orjson.loads(line.removeprefix("data: ")) for line in lines
                        if line.startswith("data: {") and '"usage"' in line]
        if include_usage:
            assert [c["spillgate"] for c in usage_chunks] == [
                {"cost_usd": "0.00000000", "backend": "cache"}]
        else:
            assert usage_chunks == []
        _, hit = await node.rows()
        assert hit["cost_usd"] == Decimal(0) and hit["backend"] == "cache"


async def test_a_completed_stream_is_stored_and_replays_as_json(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        stream = await node.sdk().chat.completions.create(
            model="exact", messages=[{"role": "user", "content": "Describe a heron."}],
            temperature=0, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])
        replay = await node.ask("Describe a heron.")
        assert replay.headers[CACHE] == "hit"
        assert _content(replay.json()) == streamed
        assert node.upstream_calls() == 1


async def test_a_stream_cut_before_its_end_is_not_stored(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        node.fake.set_faults(Fault(count=1, cut_after=2))
        body = {"model": "exact", "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": "Count the stars tonight."}]}
        async with node.client.stream("POST", "/v1/chat/completions", json=body) as cut:
            raw = b"".join([part async for part in cut.aiter_bytes()])
        assert b"[DONE]" not in raw
        again = await node.ask("Count the stars tonight.")
        assert again.headers[CACHE] == "miss"
        assert len(node.step.cache) == 1  # only the answer that completed


async def test_errors_are_not_stored(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        node.fake.set_faults(Fault(count=1, status=500))
        failed = await node.ask("Is the sea salty?")
        assert failed.status_code >= 500
        assert len(node.step.cache) == 0
        assert (await node.ask("Is the sea salty?")).headers[CACHE] == "miss"


async def test_cache_control_no_store_and_no_cache_are_honoured(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        skip = await node.ask("Why is the sky blue?", headers={"cache-control": "no-store"})
        assert skip.headers[CACHE] == "bypass" and len(node.step.cache) == 0
        await node.ask("Why is the sky blue?")
        fresh = await node.ask("Why is the sky blue?", headers={"cache-control": "no-cache"})
        assert fresh.headers[CACHE] == "miss"  # not served from the cache, may be stored
        assert node.upstream_calls() == 3
        assert (await node.ask("Why is the sky blue?")).headers[CACHE] == "hit"
        assert node.upstream_calls() == 3


async def test_sensitive_requests_are_never_looked_up_nor_stored(tmp_path: Path) -> None:
    secret = "My card is 4111 1111 1111 1111, what is my balance?"
    async with cache_node(tmp_path) as node:
        for _ in range(2):
            answer = await node.ask(secret, model="mixed")
            assert answer.status_code == 200, answer.text
            assert answer.headers[CACHE] == "bypass"
        assert len(node.step.cache) == 0
        assert all(b"4111" not in orjson.dumps(e.answer) for e in node.step.cache.entries())
        assert node.upstream_calls() == 2


async def test_sampled_requests_are_cached_only_where_the_route_opts_in(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        body = {"messages": [{"role": "user", "content": "Write a haiku."}]}
        for model, expected in (("exact", "bypass"), ("sampled", "miss"), ("sampled", "hit")):
            reply = await node.client.post("/v1/chat/completions",
                                           json={"model": model, **body})  # temperature 1
            assert reply.headers[CACHE] == expected


async def test_tool_call_answers_are_stored_only_where_the_route_opts_in(
        tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}}]
    async with cache_node(tmp_path) as node:
        for model, second in (("exact", "miss"), ("tools", "hit")):
            for expected in ("miss", second):
                reply = await node.ask("Use a tool: weather in Oslo", model=model,
                                       tools=tools, tool_choice="required")
                assert reply.json()["choices"][0]["message"].get("tool_calls")
                assert reply.headers[CACHE] == expected


async def test_a_route_without_cache_bypasses(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        for _ in range(2):
            assert (await node.ask("Hello there", model="uncached")).headers[CACHE] == "bypass"
        assert node.upstream_calls() == 2


async def test_semantic_route_serves_a_paraphrase_but_no_swapped_fact(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        first = await node.ask("What are the side effects of ibuprofen?", model="semantic")
        para = await node.ask("Which side effects does ibuprofen have?", model="semantic")
        assert para.headers[CACHE] == "hit"
        assert _content(para.json()) == _content(first.json())
        await node.ask("Can I take ibuprofen with alcohol?", model="semantic")
        await node.ask("Convert 5 km to miles.", model="semantic")
        swaps = ["Why can I not take ibuprofen with alcohol?",  # negation
                 "Can I take aspirin with alcohol?",  # entity
                 "Convert 50 km to miles.",  # number
                 "Convert 5 kg to miles."]  # unit
        for text in swaps:
            reply = await node.ask(text, model="semantic")
            assert reply.headers[CACHE] == "miss", text
            assert _content(reply.json()) != _content(first.json())
        rows = await node.rows()
        assert [r["cache"] for r in rows] == ["", "semantic"] + [""] * 6


async def test_keys_never_share_entries_unless_they_share_a_namespace(tmp_path: Path) -> None:
    async with cache_node(tmp_path) as node:
        _, alice = await create_key(node.ledger, "alice")
        _, bob = await create_key(node.ledger, "bob")
        _, team1 = await create_key(node.ledger, "t1", cache_namespace="team")
        _, team2 = await create_key(node.ledger, "t2", cache_namespace="team")
        question = "What is the tallest mountain?"
        seen = [(await node.ask(question, key=k)).headers[CACHE]
                for k in (alice, bob, alice, team1, team2, bob)]
        assert seen == ["miss", "miss", "hit", "miss", "hit", "hit"]
        assert node.upstream_calls() == 3


async def test_the_report_shows_what_the_cache_saved_per_key_tag_and_route(
        tmp_path: Path) -> None:
    import asyncio
    import json
    from datetime import UTC, datetime, timedelta

    from spillgate.reports.gather import ReportSources, Window, gather_report
    from spillgate.reports.render import render_report

    async with cache_node(tmp_path) as node:
        _, alice = await create_key(node.ledger, "alice")
        _, bob = await create_key(node.ledger, "bob")
        plan = [(alice, "exact", "team=a", "Q one"), (alice, "exact", "team=a", "Q one"),
                (alice, "exact", "team=a", "Q one"), (bob, "semantic", "team=b", "Q two"),
                (bob, "semantic", "team=b", "Q two"), (bob, "exact", "team=b", "Q three")]
        for key, route, tags, text in plan:
            await node.ask(text, model=route, key=key, headers={"x-spillgate-tags": tags})
        rows = await node.rows()
        # By hand: each hit avoids what the first answer to its question cost.
        first_cost = {}
        for row in rows:
            if not row["cache"]:
                first_cost.setdefault((row["key_id"], row["route"]), row["cost_usd"])
        hits = [r for r in rows if r["cache"]]
        assert len(hits) == 3
        expected = sum((first_cost[(r["key_id"], r["route"])] for r in hits), Decimal(0))

        state = node.app.state
        dsn = node.ledger.engine.url.render_as_string(hide_password=False)
        now = datetime.now(UTC)
        window = Window(now - timedelta(hours=1), now + timedelta(minutes=1), "hour")
        sources = ReportSources.from_settings(state.settings)
        book = state.accountant.prices
        report = json.loads(await asyncio.to_thread(
            gather_report, dsn, window, book, sources, lambda r: render_report(r, "json")))
        cache = report["cache"]
        assert cache["totals"]["hits"] == 3
        assert (report["totals"]["cache_requests"], report["totals"]["api_requests"]) == (3, 3)
        assert Decimal(cache["totals"]["avoided_usd"]) == expected > 0
        alice_id = next(r["key_id"] for r in rows if r["route"] == "exact" and r["cache"]
                        and r["tags"] == {"team": "a"})
        assert cache["by_key"][alice_id]["hits"] == 2
        assert {k: v["hits"] for k, v in cache["by_tag"].items()} == {"team=a": 2, "team=b": 1}
        assert {k: v["hits"] for k, v in cache["by_route"].items()} == {"exact": 2,
                                                                         "semantic": 1}
        assert sum(v["saved_tokens"] for v in cache["by_route"].values()) == sum(
            r["saved_tokens"] for r in hits)
        for fmt in ("md", "html"):
            text = await asyncio.to_thread(gather_report, dsn, window, book, sources,
                                           lambda r, f=fmt: render_report(r, f))
            assert "Saved by cache per route" in text and "semantic" in text
