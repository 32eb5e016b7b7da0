# The retro service image: `retro serve` with settings from RETRO_* environment variables.
# Models and indexes are not baked in: they live on the /data volume (see docker-compose.yml).
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
RUN pip install ".[data,compare]"

RUN useradd --create-home --uid 1000 retro && mkdir -p /data && chown retro /data
USER retro
VOLUME ["/data"]
EXPOSE 8000
ENV RETRO_HOST=0.0.0.0 RETRO_PORT=8000
CMD ["retro", "serve"]
