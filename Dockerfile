# Pin the base image by digest where you build: `docker buildx imagetools inspect python:3.11-slim` prints it,
# then write FROM python:3.11-slim@sha256:<digest> (the development machine has no registry access to look it
# up, so the tag stays until then; a tag can be moved to another image, a digest cannot).
FROM python:3.11-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY . .
# Every package from the hashed lock files (pip --require-hashes). The CPU build of torch first, from
# TORCH_INDEX_URL, the only index torch alone is fetched from: no extra index ever serves the other packages,
# so a same-named package on another index cannot replace them (dependency confusion).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --require-hashes --no-deps --index-url "$TORCH_INDEX_URL" -r requirements-torch.lock \
 && pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && pip install --no-cache-dir --no-deps --no-build-isolation -e .
# Runs as an unprivileged user (uid 1000, the usual first user on a Linux host, so ./data and ./corpora
# mounted from that host stay writable). It owns /data (indexes, adapters, database, reports) and nothing else.
RUN useradd --uid 1000 --create-home ragft && mkdir -p /data && chown ragft /data
USER ragft
ENV HF_HUB_OFFLINE=1 RAGFT_DATA_DIR=/data RAGFT_ARTIFACT_DIR=/data/artifacts RAGFT_EVAL__REPORTS_DIR=/data/reports
EXPOSE 8000
# 0.0.0.0 inside the container is needed for the published port; ragft refuses it without RAGFT_API__API_KEYS.
CMD ["ragft", "serve", "--host", "0.0.0.0", "--port", "8000"]
