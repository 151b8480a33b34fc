# syntax=docker/dockerfile:1
# codeprm PRM server: scores every line of a program with a Process Reward Model (CUDA image:
# PyPI's torch build with its CUDA libraries; the node's NVIDIA driver is mounted at run time).
# Build from the repository root: make images, or
#   docker build -f docker/prm-server.Dockerfile -t codeprm/prm-server:0.1.0 .

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/constraints.txt /tmp/
COPY pyproject.toml README.md /src/
COPY codeprm /src/codeprm
COPY services /src/services
RUN pip install --constraint /tmp/constraints.txt torch==2.13.0 /src

FROM python:3.11.13-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 codeprm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin codeprm
COPY --from=build /opt/venv /opt/venv
# No NVIDIA_VISIBLE_DEVICES here: the device plugin sets it to the GPUs the pod was given.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CODEPRM_PRM_HOST=0.0.0.0 \
    CODEPRM_PRM_PORT=8101
USER 10001:10001
EXPOSE 8101
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8101/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "codeprm"]
# The checkpoint comes from CODEPRM_PRM_MODEL (or append --model DIR).
CMD ["prm", "serve"]
