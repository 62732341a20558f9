"""The bundled embedding model loads offline and orders texts by meaning."""

from __future__ import annotations

import numpy as np

from spillgate.embeddings import load_local_embedder


def test_vectors_are_unit_length_and_paraphrases_sit_closer_than_other_topics() -> None:
    embedder = load_local_embedder()
    vectors = embedder.embed([
        "How do I reset my password?",
        "What are the steps to reset a forgotten password?",
        "Which wine goes well with grilled salmon?",
    ])
    assert vectors.shape == (3, embedder.dims)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_empty_input_gives_no_rows_and_the_model_is_loaded_once() -> None:
    assert load_local_embedder().embed([]).shape == (0, load_local_embedder().dims)
    assert load_local_embedder() is load_local_embedder()


def test_token_counts_grow_with_the_text() -> None:
    short, long = load_local_embedder().token_counts(["hi", "hi " * 50])
    assert 0 < short < long
