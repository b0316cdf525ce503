# syntax=docker/dockerfile:1
# DeepRec image: `deeprec serve` by default; the same image runs `deeprec worker` and one-shot commands.
#
#   docker build -t deeprec .                                  # CPU torch on python:3.11-slim
#   docker build -t deeprec:gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#
# Both stages start from BASE_IMAGE, so the virtual environment built in the first runs unchanged
# in the second. A CUDA base has no Python: the distribution's python3 is installed into it.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS build
# CPU wheels by default; a CUDA build passes the matching index (e.g. .../whl/cu126).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# torch first: the locked version, in the build its index names (+cpu, +cu126); a layer of its own for the cache.
RUN pip install -c requirements.lock --extra-index-url "${TORCH_INDEX_URL}" \
      "torch==$(sed -n 's/^torch==//p' requirements.lock)+${TORCH_INDEX_URL##*/}"
COPY pyproject.toml README.md ./
COPY app ./app
# Then exactly the locked packages, and the service without resolving anything more.
RUN pip install --no-deps -r requirements.lock && pip install --no-deps . && pip check

FROM base AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    DEEPREC_MODELS_DIR=/app/models_store \
    DEEPREC_DATABASE_URL=sqlite:////app/var/deeprec.db
RUN groupadd --system --gid 10001 deeprec \
    && useradd --system --uid 10001 --gid deeprec --home-dir /app --shell /usr/sbin/nologin deeprec \
    && mkdir -p /app/models_store /app/var \
    && chown -R deeprec:deeprec /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER deeprec
VOLUME ["/app/models_store"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["deeprec", "serve", "--host", "0.0.0.0", "--port", "8000"]
