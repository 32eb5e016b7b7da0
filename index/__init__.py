"""index: the retrieval database (corpus -> chunks -> embeddings -> vector index -> neighbours).

Its rooms, bottom up: documents and their readers (`corpus`), the named sources (`wiki_vital`,
`facts`, `dictd`, collected in the `sources` table) and the made-up evaluation facts
(`fictional`); chunks (`chunker`) and embeddings (`encoder`); the on-disk layout and file helpers
(`layout`), the locks (`locks`), a version's arrays (`version`) and the vector index behind its
seam (`vector_store`, faiss in `faiss_index`); on top, building a version (`build`), the live
store (`store`), pruning (`prune`), training neighbours (`neighbours`) and the retriever
(`retriever`).

It knows nothing of the model: it takes a tokenizer object (encode/decode) and hands back token
arrays. Nothing here imports `retro` or `service`.
"""
