"""service: the HTTP service (FastAPI) and the `retro` console entry point. Nothing imports it."""
