# syntax=docker/dockerfile:1
# The service only: Letta, LiteLLM and Supabase run elsewhere (see README "Deploying").

# The base image by digest: python:3.11.16-slim-bookworm as published on 2026-09-01 (Debian 12, like CI).
# To move to a newer build: `docker pull python:3.11-slim-bookworm` prints its digest and
# `docker run --rm python:3.11-slim-bookworm python -V` its version; write both here.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /venv
# Exact versions with hashes (`make lock`): the build resolves nothing and accepts no other file.
COPY requirements/bootstrap.lock requirements/service.lock ./requirements/
RUN /venv/bin/pip install --require-hashes -r requirements/bootstrap.lock \
    && /venv/bin/pip install --require-hashes -r requirements/service.lock
COPY pyproject.toml ./
COPY service ./service
RUN /venv/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOST=0.0.0.0 PORT=8000
RUN groupadd --system app && useradd --system --gid app --no-create-home app
COPY --from=build /venv /venv
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health/live', timeout=2)"]
CMD ["python", "-m", "service"]
