#!/usr/bin/env bash
# make docker-test: build the server and site images and run the containerised deployment end to end.
#
#   scripts/docker_test.sh [--json FILE] [--keep] [--rounds N]     (arguments go to tests/deploy/docker_e2e.py)
#   scripts/docker_test.sh --build-only [--json FILE]              (only build and check the images)
#   scripts/docker_test.sh --can-run                               (exit 0 if Docker can be used here, else 1)
#   scripts/docker_test.sh --install-prerequisites                 (as root: apt-get install what is missing of
#                                                                   docker.io and debootstrap; .ci/run does this)
#
# 1. Uses the running Docker daemon, or starts `dockerd --storage-driver=vfs` (as root) and stops only that one.
# 2. PYTHON_IMAGE: $MTMEDFORMER_PYTHON_IMAGE if set; else, if Docker Hub's python:3.11-slim-bookworm is not
#    present, the local base image from Debian packages (scripts/docker_base_image.sh; built once, cached).
# 3. torch: pip's local wheel folder (`pip config list`: find-links) when it holds the torch wheel, served to the
#    build on a loopback port, with PyPI for torchvision; otherwise the PyTorch CPU index.
# 4. python -m tests.deploy.docker_e2e: builds both images and runs every check (see its docstring).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
python="$VENV/bin/python"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 PYTHONUNBUFFERED=1

can_start_daemon() { command -v dockerd >/dev/null && [ "$(id -u)" = 0 ]; }
if [ "${1:-}" = "--install-prerequisites" ]; then
  missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ "${#missing[@]}" = 0 ] && exit 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || { echo "error: missing ${missing[*]}: install them with your package manager (as root)" >&2; exit 1; }
  echo "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  exit $?
fi
if [ "${1:-}" = "--can-run" ]; then
  command -v docker >/dev/null && { docker info >/dev/null 2>&1 || can_start_daemon; }
  exit $?
fi
command -v docker >/dev/null || { echo "error: no docker client (apt-get install docker.io)" >&2; exit 2; }
# Checked only here: --can-run and --install-prerequisites above run before `make install` (.ci/run).
[ -x "$python" ] || { echo "error: $python not found: run 'make install' first" >&2; exit 2; }

dockerd_pid=""
stop_daemon() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
}
trap stop_daemon EXIT
if ! docker info >/dev/null 2>&1; then
  can_start_daemon || { echo "error: no Docker daemon reachable, and starting one needs root and dockerd" >&2; exit 2; }
  log="$(mktemp /tmp/mtm-dockerd.XXXXXX.log)"
  echo "starting dockerd --storage-driver=vfs (log: $log)"
  dockerd --storage-driver=vfs >"$log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 20 "$log" >&2; echo "error: dockerd did not start" >&2; exit 1; }
fi

base="${MTMEDFORMER_PYTHON_IMAGE:-}"
if [ -z "$base" ] && ! docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
  base="local/python:3.11-bookworm"
  scripts/docker_base_image.sh "$base"
fi

args=(--base-image "$base")
links="$("$python" -m pip config get global.find-links 2>/dev/null || true)"
if [ -n "$links" ] && [ -d "$links" ] && compgen -G "$links/torch-*.whl" >/dev/null; then
  args+=(--torch-find-links "$links" --torch-index-url https://pypi.org/simple)
fi
"$python" -m tests.deploy.docker_e2e "${args[@]}" "$@"
