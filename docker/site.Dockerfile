# MTMedFormer-FL site image: Flower SuperNode + ClientApp (PyTorch CPU by default, MONAI, the app's code).
#
# Build from the repository root (the build context must be the checkout; .dockerignore keeps it small):
#   docker build -f docker/site.Dockerfile -t mtmedformer-fl/site:0.1.0 .
# CUDA variant (NVIDIA GPU at the site; needs the NVIDIA Container Toolkit on the host):
#   docker build -f docker/site.Dockerfile -t mtmedformer-fl/site:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda-tag> .
#   where <cuda-tag> is a CUDA build published for torch 2.13.0 (pytorch.org lists them, e.g. cu126).
# Without Docker Hub: --build-arg PYTHON_IMAGE=local/python:3.11-bookworm (scripts/docker_base_image.sh).
#
# The SuperNode only dials out to the SuperLink; the image exposes no port. The site's data is mounted
# read-only at /data (manifest at /data/manifest.csv); the process runs as the unprivileged user
# `flwr` (APP_UID:APP_GID, default 10001:10001), which must be able to read the data: build with
# --build-arg APP_UID=$(id -u owner) --build-arg APP_GID=$(id -g owner), or run with
# `user: "<uid>:<gid>"` (compose) -- the writable folders below accept any uid. The ClientApp's warm
# server keeps its socket under /tmp (writable by every uid).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Everything from here to the "image-specific" line is identical in server.Dockerfile and site.Dockerfile, so
# building both images builds these layers once (Docker's layer cache; test_docker_files checks it).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional extra wheel folder or URL for torch/torchvision (scripts/docker_test.sh: the local CPU wheel).
ARG TORCH_FIND_LINKS=
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG APP_UID=10001
ARG APP_GID=10001

# No telemetry or update checks from inside a hospital network; the app runs in this environment
# (Flower would otherwise install the app's dependencies into a fresh one for every run). SuperExec asks
# for new tasks every 0.1 s instead of Flower's default 1 s: about a second less of every round.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1 \
    FLWR_HOME=/var/lib/flwr/home \
    MTMEDFORMER_CACHE=/var/lib/flwr/cache \
    MPLCONFIGDIR=/var/lib/flwr/matplotlib \
    HOME=/var/lib/flwr

# On Docker's vfs storage driver (CI) every instruction after the big layers copies the whole file system:
# the metadata steps come early (WORKDIR) or are shared by both images (USER and WORKDIR at the end).
WORKDIR /opt/mtmedformer-fl

# torch first, from the PyTorch index (CPU or CUDA build): the dependency step below leaves it alone.
RUN pip install ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} --index-url "${TORCH_INDEX_URL}" \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# The other runtime dependencies of pyproject.toml, without torch (installed above) and without Flower's
# `simulation` extra (Ray: only `flwr run` on a laptop uses it). A layer of its own: code changes keep it.
COPY pyproject.toml docker/image_requirements.py ./
RUN python image_requirements.py pyproject.toml > requirements.txt && pip install -r requirements.txt

# The code (.dockerignore keeps only what the images need), installed without re-resolving anything, and the
# unprivileged user with the writable folders of both images (the layout is shared: fewer layers to build).
# The installed copy provides the `mtmedformer` command (check-data at the site); the ServerApp/ClientApp code
# that runs is the FAB that `flwr run` sends, so keep both at one version.
COPY . ./
RUN pip install --no-deps . && rm -rf build \
 && groupadd --gid "${APP_GID}" flwr \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /var/lib/flwr --no-create-home \
      --shell /usr/sbin/nologin flwr \
 && mkdir -p /data /results /var/lib/flwr/home /var/lib/flwr/state /var/lib/flwr/cache /var/lib/flwr/matplotlib \
 && chown -R flwr:flwr /var/lib/flwr /results \
 && chmod 1777 /var/lib/flwr /var/lib/flwr/home /var/lib/flwr/state /var/lib/flwr/cache /var/lib/flwr/matplotlib \
      /results
USER ${APP_UID}:${APP_GID}
WORKDIR /var/lib/flwr

# ---- image-specific from here ----
# flower-supernode (same flags) with its idle message poll at MTMEDFORMER_SUPERNODE_POLL_S (default 0.5 s)
# instead of Flower's fixed 3 s: client/supernode.py.
ENTRYPOINT ["mtmedformer-supernode"]
CMD ["--help"]
