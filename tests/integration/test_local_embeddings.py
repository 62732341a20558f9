"""`/v1/embeddings` served on the node by the bundled embedding model, through the official
OpenAI SDK: the text never leaves the node, the usage is real, the errors are OpenAI-shaped."""

from __future__ import annotations

import base64
import struct

import httpx
import numpy as np
import openai
import pytest

from tests.support import Proc

MODEL = "wordllama-l2-supercat-256"


@pytest.fixture(scope="module")
def sdk(node: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused-on-loopback", max_retries=0)


def test_the_embedding_model_is_listed(sdk: openai.OpenAI) -> None:
    assert MODEL in {m.id for m in sdk.models.list()}


def test_sdk_batch_gives_unit_vectors_in_order_with_usage(sdk: openai.OpenAI) -> None:
    texts = ["How do I reset my password?", "Steps to reset a forgotten password",
             "Best wine with grilled salmon"]
    reply = sdk.embeddings.create(model=MODEL, input=texts)  # the SDK asks for base64
    assert [d.index for d in reply.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (3, 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert reply.usage.prompt_tokens == reply.usage.total_tokens >= 3 * 3


def test_float_and_base64_encodings_carry_the_same_vector(node: Proc) -> None:
    body = {"model": MODEL, "input": "the same sentence, twice"}
    as_float = httpx.post(node.base_url + "/embeddings", json=body, timeout=30)
    as_b64 = httpx.post(node.base_url + "/embeddings",
                        json={**body, "encoding_format": "base64"}, timeout=30)
    assert as_float.status_code == as_b64.status_code == 200
    raw = base64.b64decode(as_b64.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert np.allclose(decoded, as_float.json()["data"][0]["embedding"], atol=1e-6)
    assert as_float.headers["x-spillgate-backend"] == "local-embed"


def test_dimensions_keep_a_renormalised_prefix(sdk: openai.OpenAI) -> None:
    full = sdk.embeddings.create(model=MODEL, input="matryoshka", encoding_format="float")
    short = sdk.embeddings.create(model=MODEL, input="matryoshka", dimensions=64,
                                  encoding_format="float")
    prefix = np.array(full.data[0].embedding[:64])
    assert len(short.data[0].embedding) == 64
    assert np.allclose(short.data[0].embedding, prefix / np.linalg.norm(prefix), atol=1e-5)


@pytest.mark.parametrize(("extra", "param"), [
    ({"input": ""}, "input[0]"),
    ({"input": ["ok", "  "]}, "input[1]"),
    ({"input": [[1, 2, 3]]}, "input[0]"),
    ({"input": "x", "dimensions": 1000}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_inputs_are_400_in_the_openai_shape(node: Proc, extra: dict[str, object],
                                                 param: str) -> None:
    reply = httpx.post(node.base_url + "/embeddings", json={"model": MODEL, **extra},
                       timeout=30)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_chat_on_the_embedding_model_is_a_clear_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
