# syntax=docker/dockerfile:1
#
# One image for every role of the reward fulfillment service:
#   docker run IMAGE                          -> API (default CMD: rewards api)
#   docker run IMAGE worker --processes 2     -> Dramatiq workers
#   docker run IMAGE migrate                  -> Alembic upgrade head, then exit
#   docker run IMAGE catalog apply /app/catalog/demo, keys create, ... -> any CLI command
#
# Build:  docker build -t rewards:local .
# Containers always get DATABASE_URL and REDIS_URL, so the embedded
# PostgreSQL/Redis of `rewards serve` are never started inside the image.

ARG PYTHON_VERSION=3.11

# --------------------------------------------------------------------------
# Stage 1: builder - installs the locked dependencies (requirements.lock, hash-
# checked: the same versions as CI) and then the project itself into a self-
# contained virtualenv that the runtime stage copies. The C toolchain is for any
# locked dependency that has no binary wheel for the build platform.
# --------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

COPY pyproject.toml requirements.lock ./
COPY service ./service
COPY workers ./workers
COPY catalog ./catalog

# The pip cache mount (BuildKit) keeps downloaded/built dependency wheels
# between builds without putting them in any image layer. The project goes in
# with --no-deps: everything it needs is already there, exactly as locked.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements.lock \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/rewards --help > /dev/null

# --------------------------------------------------------------------------
# Stage 2: runtime - slim Python, no compiler, no wheels, non-root user.
# --------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="rewards" \
      org.opencontainers.image.description="Reward fulfillment service: API, Dramatiq workers, migrations and CLI"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REWARDS_DATA_DIR=/var/lib/rewards \
    LOG_LEVEL=INFO

# Fixed numeric UID/GID: Kubernetes' runAsNonRoot can only verify numeric users.
RUN groupadd --system --gid 10001 rewards \
    && useradd --system --uid 10001 --gid rewards --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin rewards \
    && mkdir -p /app /var/lib/rewards \
    && chown rewards:rewards /var/lib/rewards

COPY --from=builder /opt/venv /opt/venv
# The demo catalog at a stable path, for `rewards catalog apply /app/catalog/demo`
# (it is also inside the installed package).
COPY catalog/demo /app/catalog/demo

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness of the API (no dependencies are checked by /healthz). The worker,
# migrate and smsc roles override or disable this in docker-compose.yml;
# Kubernetes ignores it and uses the chart's probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["rewards"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
