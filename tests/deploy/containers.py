"""Docker helpers of ``make docker-test``: build an image, and start a compose service with ``docker run``.

Debian's ``docker-compose`` 1.29 rejects the compose files' top-level ``name:`` and Compose v2 is not
installed on the CI machines, so :func:`run_service` turns one service of the merged compose model
(:func:`tests.deploy.compose.load_compose`: the same files a hospital runs) into ``docker run`` arguments:
image, user, command, restart policy, bind mounts (relative sources resolved against a folder laid out like
``docker/`` after the documented steps) and named volumes (prefixed per test run). Three things differ from
``docker compose up`` and are the test's own: the containers join the test's own bridge network under their
service name, the SuperLink's port is published on a free loopback port instead of 8000, and the health check
is polled from the host instead of by the daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DockerError(RuntimeError):
    """A ``docker`` command failed; the message has the command and its output."""


def docker(args: Sequence[str], timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``docker <args>``; raise :class:`DockerError` on a non-zero exit when ``check``."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}".strip()
        raise DockerError(f"docker {' '.join(args)} failed (exit {result.returncode}):\n{output}")
    return result


def build_image(dockerfile: Path, tag: str, context: Path, build_args: Mapping[str, str], log: Path) -> float:
    """``docker build`` (host network: the build fetches packages) and return its wall time in seconds.

    The classic builder is used (``DOCKER_BUILDKIT=0``): BuildKit would fetch its Dockerfile frontend from
    Docker Hub, and Debian's Docker has no ``buildx``. The build log goes to ``log``.
    """
    argv = ["docker", "build", "--network", "host", "-f", str(dockerfile), "-t", tag]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        result = subprocess.run(
            [*argv, str(context)], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DOCKER_BUILDKIT": "0"},
            timeout=3600,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise DockerError(f"building {tag} from {dockerfile} failed (exit {result.returncode}); log {log}:\n{tail}")
    return time.monotonic() - start


def image_size(tag: str) -> int:
    """Size of the image ``tag`` in bytes, as ``docker image inspect`` reports it (all its layers)."""
    return int(json.loads(docker(["image", "inspect", tag]).stdout)[0]["Size"])


@dataclass(frozen=True)
class Container:
    """A started container: its name and the argv it was started with (to report and to restart)."""

    name: str
    argv: list[str]

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of its output (stdout and stderr)."""
        result = docker(["logs", "--tail", str(lines), self.name], check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        """Whether the container exists and runs."""
        result = docker(["inspect", "-f", "{{.State.Running}}", self.name], check=False)
        return result.stdout.strip() == "true"

    def exec(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container as its own user (``docker exec``); never raises on exit status."""
        return docker(["exec", self.name, *argv], timeout=timeout, check=False)

    def kill(self) -> None:
        """SIGKILL every process of the container (a crash: no graceful shutdown, no deactivation)."""
        docker(["kill", self.name])

    def start(self) -> None:
        """Start the stopped container again, with the same mounts, network and command."""
        docker(["start", self.name])


def service_argv(
    service: Mapping[str, Any],
    *,
    name: str,
    network: str,
    alias: str,
    layout_dir: Path,
    volume_prefix: str,
    publish: Sequence[str] = (),
    detach: bool = True,
) -> list[str]:
    """``docker run`` argv of one service of a merged compose model.

    Parameters
    ----------
    service
        The service's entry of :func:`~tests.deploy.compose.load_compose` (``volumes`` already :class:`Mount`).
    name, network, alias
        Container name, the test's bridge network, and the name other containers reach it by (the service name).
    layout_dir
        Where relative bind-mount sources resolve (compose resolves them against the compose file's folder;
        the test builds a folder with the same layout instead of writing into the checkout).
    volume_prefix
        Prefix of the named volumes (one set per test run).
    publish
        ``-p`` values replacing the service's ``ports`` (the test uses a free loopback port).
    detach
        ``-d`` with the service's restart policy; ``False`` runs it in the foreground without one (a container
        that is expected to exit).
    """
    argv = ["run", "--name", name, "--network", network, "--network-alias", alias]
    if detach:
        argv += ["-d", "--restart", str(service.get("restart", "no"))]
    if "user" in service:
        argv += ["--user", str(service["user"])]
    for port in publish:
        argv += ["-p", port]
    for mount in service.get("volumes", []):
        if mount.bind:
            source = Path(mount.source)
            source = source if source.is_absolute() else (layout_dir / source).resolve()
            if not source.exists():
                raise DockerError(f"bind mount source {source} (for {mount.target}) does not exist")
            spec = f"type=bind,source={source},target={mount.target}"
        else:
            spec = f"type=volume,source={volume_prefix}{mount.source},target={mount.target}"
        argv += ["--mount", spec + (",readonly" if mount.read_only else "")]
    return [*argv, str(service["image"]), *[str(a) for a in service.get("command", [])]]


def run_service(service: Mapping[str, Any], **kwargs: Any) -> Container:
    """Start one compose service detached (see :func:`service_argv` for the arguments)."""
    argv = service_argv(service, **kwargs)
    docker(argv)
    return Container(str(kwargs["name"]), argv)
