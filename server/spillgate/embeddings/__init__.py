"""Local text embeddings: computed on the node, never sent anywhere.

One small static-embedding model (WordLlama `l2_supercat_256`, MIT, 16 MB of weights shipped
inside the `wordllama` wheel) serves three users: the semantic response cache, the learned
routing dispatcher's features and the local `/v1/embeddings` model. It loads offline from the
installed package in about half a second and embeds a short prompt in well under a
millisecond on one core, so it can run on the request path without a GPU or an engine.
"""

from spillgate.embeddings.local import EMBEDDING_MODEL_ID, LocalEmbedder, load_local_embedder

__all__ = ["EMBEDDING_MODEL_ID", "LocalEmbedder", "load_local_embedder"]
