# syntax=docker/dockerfile:1
# codeprm executor: runs untrusted programs in Linux-namespace sandboxes (CPU image, no torch).
# Build from the repository root: make images, or
#   docker build -f docker/executor.Dockerfile -t codeprm/executor:0.1.0 .
# The pod needs user namespaces and an unmasked /proc: docs/deploy.md, "The executor's sandbox".

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/constraints.txt docker/executor.requirements.txt /tmp/
RUN pip install --constraint /tmp/constraints.txt --requirement /tmp/executor.requirements.txt
COPY pyproject.toml README.md /src/
COPY codeprm /src/codeprm
COPY services /src/services
RUN pip install --no-deps /src

FROM python:3.11.13-slim-bookworm
# tini reaps the orphans of a sandbox whose worker died and forwards SIGTERM.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 codeprm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin codeprm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CODEPRM_EXECUTOR_HOST=0.0.0.0 \
    CODEPRM_EXECUTOR_PORT=8100
USER 10001:10001
EXPOSE 8100
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8100/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "codeprm"]
CMD ["executor", "serve"]
