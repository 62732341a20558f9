"""`spillgate router train` and `spillgate eval routing` on a small slice of the shared data.

The fixture holds 30 rows of each of 7 subjects (GSM8K and 6 MMLU subjects) from
routing-evals.jsonl, chosen by label (8 fixed by the strong model, 3 wrong for both, 2
right only for the weak, 17 right for both) so that every half of a subject split has a
quality gap to recover.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spillgate.cli import main as cli_main
from spillgate.embeddings import load_local_embedder
from spillgate.errors import ConfigError
from spillgate.learned_file import load_router
from spillgate.routing.learned import EMBED_CHARS, prompt_text

DATA = Path(__file__).parents[1] / "fixtures" / "routing-evals-slice.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines()]


def train(out: Path, *extra: str) -> Path:
    assert cli_main(["router", "train", "--data", str(DATA), "--output", str(out),
                     *extra]) == 0
    return out


def evaluate(router: Path, tmp: Path, *extra: str) -> tuple[list[dict[str, Any]], Any]:
    scores, report = tmp / "scores.jsonl", tmp / "report.json"
    assert cli_main(["eval", "routing", "--data", str(DATA), "--router", str(router),
                     "--scores", str(scores), "--format", "json", "--output", str(report),
                     "--seed", "5", *extra]) == 0
    return ([json.loads(line) for line in scores.read_text().splitlines()],
            json.loads(report.read_text()))


def test_a_fixed_seed_gives_the_same_model_and_the_same_scores(tmp_path: Path) -> None:
    split = ("--split-seed", "3")
    first = train(tmp_path / "a.json", *split, "--half", "1")
    second = train(tmp_path / "b.json", *split, "--half", "1")
    assert first.read_bytes() == second.read_bytes()
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    scores_a, report_a = evaluate(first, tmp_path / "1", *split, "--half", "2")
    scores_b, report_b = evaluate(second, tmp_path / "2", *split, "--half", "2")
    assert scores_a == scores_b
    assert report_a.pop("router")["file"] != report_b.pop("router")["file"]
    assert report_a == report_b


def test_held_out_evaluation_scores_only_subjects_the_router_never_saw(tmp_path: Path) -> None:
    router = train(tmp_path / "r.json", "--split-seed", "3", "--half", "1")
    scores, report = evaluate(router, tmp_path, "--split-seed", "3", "--half", "2")
    held_out = {ROWS[s["index"]]["subject"] for s in scores}
    assert "gsm8k" not in held_out
    trained_rows = load_router(router).meta["rows"]
    mmlu = {r["subject"] for r in ROWS} - {"gsm8k"}
    # Training used GSM8K plus the MMLU subjects not held out: 30 rows each.
    assert trained_rows == 30 * (1 + len(mmlu - held_out))
    assert len(held_out) == len(mmlu) // 2 + len(mmlu) % 2
    assert report["rows"] == len(scores) == 30 * len(held_out)
    assert all(0.0 < s["score"] < 1.0 for s in scores)
    picked = [ROWS[s["index"]] for s in scores]
    assert report["weak_quality"] == pytest.approx(np.mean([r["weak_ok"] for r in picked]))
    assert set(report["methods"]) == {"router", "random", "prompt_length"}


def test_the_model_file_is_small_versioned_and_names_its_inputs(tmp_path: Path) -> None:
    router = train(tmp_path / "r.json")
    data = json.loads(router.read_text())
    assert router.stat().st_size < 64 * 1024
    assert (data["format"], data["version"]) == ("spillgate-router", 1)
    assert data["embedder"] == load_local_embedder().model_id
    assert data["meta"]["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert data["meta"]["rows"] == len(ROWS)
    assert "log_chars" in data["structural"]
    assert len(data["weights"]) == load_local_embedder().dims + len(data["structural"])


def test_paid_share_calibrates_the_threshold_on_the_training_prompts(tmp_path: Path) -> None:
    router = load_router(train(tmp_path / "r.json"))
    scores = router.scores([r["prompt"] for r in ROWS], load_local_embedder().embed)
    for share in (0.1, 0.3, 0.5):
        above = float(np.mean(scores > router.threshold_for_share(share)))
        assert abs(above - share) <= 1 / len(ROWS) + 1e-9


def test_structural_only_routers_need_no_embedding_model(tmp_path: Path) -> None:
    router = load_router(train(tmp_path / "r.json", "--no-embedding"))
    assert router.embedder is None
    assert router.scores(["What is 2 + 2?"], None).shape == (1,)


@pytest.mark.parametrize(("edit", "message"), [
    ({"version": 99}, "retrain"),
    ({"format": "onnx"}, "not a router file"),
    ({"structural": ["log_chars", "sentiment"]}, "features this version lacks"),
    ({"weights": [0.0]}, "malformed"),
    ({"embed_chars": EMBED_CHARS + 1}, "different prompt length"),
])
def test_a_router_file_this_version_cannot_use_is_refused(
        tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    path = train(tmp_path / "r.json", *(() if "embed_chars" in edit else ("--no-embedding",)))
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    with pytest.raises(ConfigError, match=message):
        load_router(path)


def test_bad_training_rows_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "weak_ok": true, "strong_ok": true}\n'
                   '{"prompt": "b", "weak_ok": "yes", "strong_ok": true}\n')
    code = cli_main(["router", "train", "--data", str(bad), "--output",
                     str(tmp_path / "r.json")])
    assert code == 2
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("body", "text"), [
    ({"messages": [{"role": "system", "content": "be brief"},
                   {"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                   {"role": "user", "content": "what is 2+2?"}]}, "what is 2+2?"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "image_url", "image_url": {}},
                                                {"type": "text", "text": "b"}]}]}, "a\nb"),
    ({"prompt": "complete me"}, "complete me"),
    ({"prompt": ["one", "two"]}, "one"),
    ({"prompt": [1, 2, 3]}, ""),
])
def test_the_scored_text_is_the_users_last_question(body: dict[str, Any], text: str) -> None:
    assert prompt_text(body) == text
