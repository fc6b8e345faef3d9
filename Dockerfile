# The rag-async image: one image for the API and the workers (docker-compose.yml picks the
# command). It runs against a Valkey/Redis server and a Qdrant server given by RAG_REDIS_URL and
# RAG_QDRANT_URL; embedded Qdrant is for `rag-async up` on one machine, not for containers.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build reads, so that editing tests or docs does not reinstall it.
COPY pyproject.toml README.md /tmp/src/
COPY rag_async /tmp/src/rag_async
COPY workers /tmp/src/workers
RUN pip install "/tmp/src[dense]" && rm -rf /tmp/src
COPY web /opt/rag-async/web
ENV RAG_WEB_DIR=/opt/rag-async/web

RUN useradd --create-home --uid 10001 rag
USER rag
WORKDIR /home/rag

EXPOSE 8000
# No HEALTHCHECK here: the same image runs the API and the workers, which are checked
# differently (the API's /healthz, a worker's heartbeat in Valkey): docker-compose.yml and
# deploy/kubernetes/ say how.
CMD ["rag-async", "api"]
