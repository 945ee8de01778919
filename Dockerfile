# syntax=docker/dockerfile:1
# Two stages: `build` makes wheels of webhook-router and of every dependency at the versions
# pinned in constraints.txt; the runtime image installs only those wheels (no compiler, no
# pip cache, no source tree) and runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY router ./router
COPY consumers ./consumers
# PIP_CONSTRAINT also reaches the isolated build of the project (setuptools' version).
ENV PIP_CONSTRAINT=/src/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app router
WORKDIR /app
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/constraints.txt,target=/tmp/constraints.txt \
    pip install --no-cache-dir --no-index --find-links /wheels -c /tmp/constraints.txt \
        webhook-router
COPY config ./config
# `python -m consumers all` keeps its SQLite store in data/ (compose uses PostgreSQL).
RUN mkdir data && chown router:router data
ENV ROUTER_CONFIG=/app/config/router.toml PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "router", "serve"]
