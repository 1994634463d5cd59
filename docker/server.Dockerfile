# syntax=docker/dockerfile:1
# MTMedFormer-FL server image: Flower SuperLink + ServerApp (PyTorch CPU, MONAI, the app's code).
#
# Build from the repository root (the build context must be the checkout):
#   docker build -f docker/server.Dockerfile -t mtmedformer-fl/server:0.1.0 .
# The ServerApp aggregates and (optionally) evaluates on the server; it needs no GPU. A CUDA build works
# the same way as for the site image (--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda-tag>).
#
# The SuperLink serves the Fleet API (SuperNodes), the Control API (`flwr` CLI) and the Runtime API
# (its own ServerApp process) on one port, 8000. State (runs, registered SuperNode keys) lives in
# /var/lib/flwr/state, results of runs in /results (the ServerApp's working folder): mount volumes there.
# Runs as the unprivileged user `flwr` (APP_UID:APP_GID, default 10001:10001) or any uid given with
# `user:` (the writable folders accept any uid); the TLS key mounted at
# /certs/server.key must be readable by that user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG APP_UID=10001
ARG APP_GID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_HOME=/var/lib/flwr/home \
    MTMEDFORMER_CACHE=/var/lib/flwr/cache \
    MPLCONFIGDIR=/var/lib/flwr/matplotlib \
    HOME=/var/lib/flwr

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /opt/mtmedformer-fl
COPY pyproject.toml README.md ./
COPY mtmedformer/ mtmedformer/
COPY strategies/ strategies/
COPY server/ server/
COPY client/ client/
RUN pip install . && rm -rf build

RUN groupadd --gid "${APP_GID}" flwr \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /var/lib/flwr --no-create-home \
      --shell /usr/sbin/nologin flwr \
 && mkdir -p /var/lib/flwr/home /var/lib/flwr/state /var/lib/flwr/cache /var/lib/flwr/matplotlib /results \
 && chown -R flwr:flwr /var/lib/flwr /results \
 && chmod 1777 /var/lib/flwr /var/lib/flwr/home /var/lib/flwr/state /var/lib/flwr/cache /var/lib/flwr/matplotlib /results

USER ${APP_UID}:${APP_GID}
# Relative output-dir values of `flwr run --run-config` resolve against the SuperLink's working folder.
WORKDIR /results
EXPOSE 8000
ENTRYPOINT ["flower-superlink"]
CMD ["--help"]
