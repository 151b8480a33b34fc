# syntax=docker/dockerfile:1
# codeprm labeler: the labeling API (`codeprm label serve`, the default command) and its queue
# workers (`codeprm label worker`). CPU image: a local Hugging Face policy runs on CPU, if at all.
# Build from the repository root: make images, or
#   docker build -f docker/labeler.Dockerfile -t codeprm/labeler:0.1.0 .

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU build of torch; its dependencies come from PyPI below, at the pinned versions.
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY docker/constraints.txt /tmp/
COPY pyproject.toml README.md /src/
COPY codeprm /src/codeprm
COPY services /src/services
RUN pip install --constraint /tmp/constraints.txt /src

FROM python:3.11.13-slim-bookworm
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
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CODEPRM_LABELER_HOST=0.0.0.0 \
    CODEPRM_LABELER_PORT=8102
USER 10001:10001
EXPOSE 8102
# For the API; a worker container (`label worker`) has no port: run it with --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8102/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "codeprm"]
CMD ["label", "serve"]
