# syntax=docker/dockerfile:1
# The service only: Letta, LiteLLM and Supabase run elsewhere (see README "Deploying").

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /venv
COPY pyproject.toml ./
COPY service ./service
RUN /venv/bin/pip install --upgrade pip && /venv/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOST=0.0.0.0 PORT=8000
RUN groupadd --system app && useradd --system --gid app --no-create-home app
COPY --from=build /venv /venv
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health/live', timeout=2)"]
CMD ["python", "-m", "service"]
