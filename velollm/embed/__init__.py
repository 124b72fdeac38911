"""Text embeddings: BERT-family encoders and decoder embedding models, for /v1/embeddings, /api/embed
and the semantic response cache.

    from velollm.embed import load_embedder
    embedder = load_embedder()            # all-MiniLM-L6-v2, found offline
    vectors = embedder.embed(["a", "b"])  # float32 [2, embedder.dim]
"""

from velollm.embed.embedder import Embedder
from velollm.embed.resolve import load_embedder, resolve_embedding

__all__ = ["Embedder", "load_embedder", "resolve_embedding"]
