"""`spillgate eval cascade`: grading, AUROC, the threshold sweep, the committed set, and a
whole run against a model server speaking the OpenAI wire format on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from spillgate.cli import main as cli_main
from spillgate.reports.cascade_eval import Graded, auroc, evaluate, grade, sweep

SET = Path("tests/fixtures/cascade_eval.jsonl")


@pytest.mark.parametrize("kind, gold, answer, right", [
    ("arithmetic", "12", "12", True), ("arithmetic", "12", "The answer is 12.", True),
    ("arithmetic", "12", "112", False), ("arithmetic", "12", "1 2", False),
    ("unit", "1000", "1,000 grams", True), ("unit", "100", "10", False),
    ("yes_no", "yes", "Yes, it is.", True), ("yes_no", "no", "Yes. No.", False),
    ("yes_no", "no", "Nope", False), ("capital", "Paris", "paris", True),
    ("capital", "New Delhi", "The capital is New Delhi.", True),
    ("capital", "Rome", "I think it is probably Milan, but certainly not Rome.", False),
    ("capital", "Paris", "The capital of France is Paris.", True),
    ("arithmetic", "16", "5 + 11 = 16", True), ("arithmetic", "16", "5 + 11 = 15", False),
])
def test_grading(kind: str, gold: str, answer: str, right: bool) -> None:
    assert grade(kind, gold, answer) is right


def pairwise_auroc(scores: list[float], labels: list[bool]) -> float:
    """Every (right, wrong) pair: 1 when the right draft scores higher, 1/2 on a tie."""
    good = [s for s, ok in zip(scores, labels, strict=True) if ok]
    bad = [s for s, ok in zip(scores, labels, strict=True) if not ok]
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
    return wins / (len(good) * len(bad))


@given(st.lists(st.tuples(st.sampled_from([-3.0, -2.0, -1.0, -0.5, 0.0]), st.booleans()),
                min_size=2, max_size=60))
def test_auroc_equals_the_pairwise_count(pairs: list[tuple[float, bool]]) -> None:
    scores, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    if all(labels) or not any(labels):
        assert auroc(scores, labels) is None
    else:
        assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels))


def test_the_sweep_counts_by_hand() -> None:
    values = [-0.1, -0.2, -0.5, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]
    correct = [True, True, True, False, True, False, False, True, False, False]
    rows = {r["threshold"]: r for r in sweep(values, correct)}
    at = rows[-1.0]  # keeps the 4 most confident: 3 right
    assert at["kept"] == 4 and at["escalation_rate"] == 0.6
    assert at["kept_accuracy"] == 0.75
    assert at["cascade_accuracy_if_paid_right"] == (3 + 6) / 10
    assert rows[-7.0]["escalation_rate"] == 0.0


def test_the_committed_set_is_what_the_script_makes() -> None:
    made = subprocess.run([sys.executable, "scripts/cascade_eval_set.py"], check=True,
                          capture_output=True).stdout
    assert made == SET.read_bytes()
    rows = [orjson.loads(line) for line in made.splitlines()]
    assert len(rows) == 200 and len({r["id"] for r in rows}) == 200
    assert {r["kind"] for r in rows} == {"arithmetic", "capital", "unit", "yes_no"}


async def test_a_run_against_a_model_server(tmp_path: Path) -> None:
    """A model that answers capitals confidently and right, everything else unsure and
    wrong: AUROC 1 on every signal, and a threshold that keeps exactly the capitals."""
    asked: list[dict[str, object]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        prompt = body["messages"][-1]["content"]
        capital = prompt.startswith("What is the capital of")
        text = prompt.split(" of ")[1].split("?")[0] if capital else "banana"
        gold = {"France": "Paris", "Japan": "Tokyo"}.get(text, text)
        content, lp = (gold, -0.05) if capital else ("banana", -2.5)
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": [{"token": content, "logprob": lp,
                                                   "top_logprobs": []}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

    data = tmp_path / "set.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"id": "a", "kind": "capital", "prompt": "What is the capital of France?",
         "gold": "Paris"},
        {"id": "b", "kind": "capital", "prompt": "What is the capital of Japan?",
         "gold": "Tokyo"},
        {"id": "c", "kind": "arithmetic", "prompt": "What is 2 + 2?", "gold": "4"},
        {"id": "d", "kind": "yes_no", "prompt": "Is ice cold?", "gold": "yes"},
    ]))
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app, host="127.0.0.1") as server:
        out = tmp_path / "report.json"
        argv = ["eval", "cascade", "--data", str(data), "--base-url",
                str(server.make_url("/v1")), "--format", "json", "--output", str(out),
                "--drafts", str(tmp_path / "drafts.jsonl")]
        code = await asyncio.to_thread(cli_main, argv)
    assert code == 0
    assert all(body["logprobs"] is True and body["temperature"] == 0 for body in asked)
    report = orjson.loads(out.read_bytes())
    assert report["items"] == 4 and report["draft_accuracy"] == 0.5
    for figures in report["signals"].values():
        assert figures["auroc"] == 1.0
        keep_capitals = [r for r in figures["thresholds"] if r["threshold"] == -0.05]
        assert keep_capitals[0]["kept_accuracy"] == 1.0
        assert keep_capitals[0]["escalation_rate"] == 0.5
    drafts = [orjson.loads(line) for line in (tmp_path / "drafts.jsonl").read_bytes().splitlines()]
    assert sorted((d["id"], d["correct"]) for d in drafts) == [
        ("a", True), ("b", True), ("c", False), ("d", False)]


async def test_a_run_cut_short_keeps_the_drafts_it_graded(tmp_path: Path) -> None:
    """Drafts are written as they are graded: a server that fails on the third question
    ends the run with an error, and the two graded before it are on disk."""
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Q3"):
            return web.json_response({"error": {"message": "down"}}, status=500)
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "4"}, "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

    data = tmp_path / "set.jsonl"
    data.write_bytes(b"".join(orjson.dumps(
        {"id": f"q{i}", "kind": "arithmetic", "prompt": f"Q{i}: what is 2 + 2?", "gold": "4"},
    ) + b"\n" for i in (1, 2, 3, 4)))
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app, host="127.0.0.1") as server:
        argv = ["eval", "cascade", "--data", str(data), "--base-url",
                str(server.make_url("/v1")), "--concurrency", "1",
                "--drafts", str(tmp_path / "drafts.jsonl")]
        code = await asyncio.to_thread(cli_main, argv)
    assert code != 0
    drafts = [orjson.loads(line) for line in (tmp_path / "drafts.jsonl").read_bytes().splitlines()]
    assert [(d["id"], d["correct"]) for d in drafts] == [("q1", True), ("q2", True)]


def test_evaluate_reports_drafts_without_logprobs() -> None:
    result = evaluate([Graded("a", "unit", True, ()), Graded("b", "unit", False, (-1.0,))])
    assert result["without_logprobs"] == 1
    assert result["signals"]["mean_logprob"]["auroc"] == 0.0  # the empty one scores lowest
