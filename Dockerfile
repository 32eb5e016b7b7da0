# The retro service image. By default it runs the demo (`retro demo --data-dir /data`): the demo
# checkpoints are baked in (models/), the index is built on first start into the /data volume and
# reused afterwards. `retro serve` with RETRO_MODEL, RETRO_INDEX, ... serves your own models instead.
FROM python:3.11-slim

# A CPU-only image can pass a PyTorch CPU wheel index here; by default pip picks torch from PyPI.
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY retro ./retro
COPY index ./index
COPY service ./service
COPY models ./models
ENV RETRO_DEMO_MODELS=/app/models
RUN pip install ".[data,compare]"

RUN useradd --create-home --uid 1000 retro && mkdir -p /data && chown retro /data
USER retro
VOLUME ["/data"]
EXPOSE 8000
ENV RETRO_HOST=0.0.0.0 RETRO_PORT=8000
CMD ["retro", "demo", "--data-dir", "/data"]
