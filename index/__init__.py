"""index: the retrieval database (corpus -> chunks -> embeddings -> faiss -> neighbours).

It knows nothing of the model: it takes a tokenizer object (encode/decode) and hands back token
arrays. Nothing here imports `retro` or `service`.
"""
