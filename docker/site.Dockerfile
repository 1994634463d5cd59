# syntax=docker/dockerfile:1
# MTMedFormer-FL site image: Flower SuperNode + ClientApp (PyTorch CPU by default, MONAI, the app's code).
#
# Build from the repository root (the build context must be the checkout):
#   docker build -f docker/site.Dockerfile -t mtmedformer-fl/site:0.1.0 .
# CUDA variant (NVIDIA GPU at the site; needs the NVIDIA Container Toolkit on the host):
#   docker build -f docker/site.Dockerfile -t mtmedformer-fl/site:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda-tag> .
#   where <cuda-tag> is a CUDA build published for torch 2.13.0 (pytorch.org lists them, e.g. cu126).
#
# The SuperNode only dials out to the SuperLink; the image exposes no port. The site's data is mounted
# read-only at /data (manifest at /data/manifest.csv); the process runs as the unprivileged user
# `flwr` (APP_UID:APP_GID, default 10001:10001), which must be able to read the data: build with
# --build-arg APP_UID=$(id -u owner) --build-arg APP_GID=$(id -g owner), or run with
# `user: "<uid>:<gid>"` (compose) -- the writable folders below accept any uid.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG APP_UID=10001
ARG APP_GID=10001

# No telemetry or update checks from inside a hospital network; the app runs in this environment
# (Flower would otherwise install the app's dependencies into a fresh one for every run).
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

# torch first, from the PyTorch index (CPU or CUDA build); `pip install .` then finds torch==2.13.0
# and torchvision==0.28.0 already satisfied and takes everything else from PyPI.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /opt/mtmedformer-fl
COPY pyproject.toml README.md ./
COPY mtmedformer/ mtmedformer/
COPY strategies/ strategies/
COPY server/ server/
COPY client/ client/
# The installed copy provides the dependencies and the `mtmedformer` command (check-data at the site);
# the ServerApp/ClientApp code that runs is the FAB that `flwr run` sends, so keep both at one version.
RUN pip install . && rm -rf build

RUN groupadd --gid "${APP_GID}" flwr \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /var/lib/flwr --no-create-home \
      --shell /usr/sbin/nologin flwr \
 && mkdir -p /data /var/lib/flwr/home /var/lib/flwr/cache /var/lib/flwr/matplotlib \
 && chown -R flwr:flwr /var/lib/flwr \
 && chmod 1777 /var/lib/flwr /var/lib/flwr/home /var/lib/flwr/cache /var/lib/flwr/matplotlib

USER ${APP_UID}:${APP_GID}
WORKDIR /var/lib/flwr
ENTRYPOINT ["flower-supernode"]
CMD ["--help"]
