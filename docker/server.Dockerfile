# MTMedFormer-FL server image: Flower SuperLink + ServerApp (PyTorch CPU, MONAI, the app's code).
#
# Build from the repository root (the build context must be the checkout; .dockerignore keeps it small):
#   docker build -f docker/server.Dockerfile -t mtmedformer-fl/server:0.1.0 .
# The ServerApp aggregates and (optionally) evaluates on the server; it needs no GPU. A CUDA build works
# the same way as for the site image (--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda-tag>).
# Without Docker Hub: --build-arg PYTHON_IMAGE=local/python:3.11-bookworm (scripts/docker_base_image.sh).
#
# The SuperLink serves the Fleet API (SuperNodes), the Control API (`flwr` CLI) and the Runtime API
# (its own ServerApp process) on one port, 8000. State (runs, registered SuperNode keys) lives in
# /var/lib/flwr/state, results of runs in /results (the ServerApp's working folder): mount volumes there.
# Runs as the unprivileged user `flwr` (APP_UID:APP_GID, default 10001:10001) or any uid given with
# `user:` (the writable folders accept any uid); the TLS key mounted at
# /certs/server.key must be readable by that user.
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
# Relative output-dir values of `flwr run --run-config` resolve against the SuperLink's working folder.
WORKDIR /results
EXPOSE 8000
ENTRYPOINT ["flower-superlink"]
CMD ["--help"]
