"""``make docker-test``: build the server and site images and run the deployment of ``docker/`` end to end.

What a hospital's IT does, with the project's own files and scripts, on one machine:

1. build ``docker/server.Dockerfile`` and ``docker/site.Dockerfile`` (they share every layer up to the code);
2. certificates (``scripts/make_certificates.sh --host superlink``), one SuperNode key per site
   (``scripts/make_supernode_keys.sh``) and synthetic site data (``docker/demo_data.py``);
3. the services of ``docker/compose.yml`` + ``docker/compose.tls.yml`` started with ``docker run``
   (:mod:`tests.deploy.containers` says why and what differs from ``docker compose up``): a TLS SuperLink with
   SuperNode authentication, the sites' keys registered with ``flwr supernode register``, three site
   containers, each with its own data mounted read-only at ``/data``, running as a non-root user;
4. checks, in this order: the images (Flower version, imports, no Ray, non-root); writing to ``/data`` fails
   inside a site container and its processes are not root; a SuperNode container with an unregistered key
   is refused; a complete federated run (``bnp_matching``, several rounds) submitted with ``flwr run``, its
   history, report and checkpoints; a site container killed during a round (the round completes with the
   other two, the restarted container rejoins the next round); the server container killed mid-run and
   restarted (the run resumes from its last complete round: no round lost or repeated, the same history as
   the uninterrupted run);
5. prints image sizes, build times and per-round wall time against the sites' critical path, and writes them
   with every check's outcome to ``--json`` (atomically).

Usage (``scripts/docker_test.sh`` starts dockerd and builds the local base image first)::

    python -m tests.deploy.docker_e2e --base-image local/python:3.11-bookworm --json /tmp/docker_e2e.json
    python -m tests.deploy.docker_e2e --base-image local/python:3.11-bookworm --build-only   # images only

Exit status 0 when every check passed, 1 when one failed (the message names it and shows the containers'
logs), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.deploy import commands
from tests.deploy.compose import load_compose
from tests.deploy.containers import (
    Container,
    DockerError,
    build_image,
    docker,
    image_size,
    run_service,
    service_argv,
)
from tests.deploy.harness import (
    CONNECTION,
    REPO_ROOT,
    Deployment,
    DeploymentError,
    _run_script,
    copy_app,
    demo_sites,
    free_port,
    make_supernode_keys,
    superlink_healthy,
)

SITES = ("site-a", "site-b", "site-c")
SERVER_TAG, SITE_TAG = "mtmedformer-fl/server:0.1.0", "mtmedformer-fl/site:0.1.0"  # the compose files' tags
COMPOSE_FILES = (REPO_ROOT / "docker" / "compose.yml", REPO_ROOT / "docker" / "compose.tls.yml")
# The demo's workload per site and round (benchmarks/round_overhead.py's deployment rows: 120 images, 1 epoch).
OVERRIDES = ";".join([
    "federated.strategy=bnp_matching", "federated.local_epochs=1", "federated.client_threads=1",
    "federated.min_available_nodes=3", "federated.min_train_nodes=2", "federated.min_evaluate_nodes=2",
    "federated.fused_evaluation=true", "federated.pack_arrays=true", "federated.round_timeout_s=600",
])  # fmt: skip
IMAGES_PER_SITE, IMAGE_SIZE = 120, 64
WHEEL_PORT = 18601  # loopback port of the local torch wheel during the build (see wheel_server)


class CheckFailed(AssertionError):
    """A check of the end-to-end test failed; the message says which and what was seen."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


@dataclass
class ContainerDeployment(Deployment):
    """The deployment of the compose files in containers; the ``flwr`` CLI runs on the host, as an operator's.

    :class:`~tests.deploy.harness.Deployment` provides the CLI side (connection, registration, node listing,
    ``flwr run`` and ``flwr ls``); this class starts, kills and restarts containers instead of processes.
    """

    services: dict[str, Any] = field(default_factory=dict)
    layout_dir: Path = Path()
    network: str = ""
    prefix: str = ""
    containers: dict[str, Container] = field(default_factory=dict)

    def container(self, service: str) -> Container:
        """The started container of ``service`` (``superlink``, ``supernode-a``, ...)."""
        return self.containers[service]

    def start_service(self, service: str, *, publish: tuple[str, ...] = ()) -> Container:
        """Start ``service`` of the compose model as container ``<prefix><service>``."""
        container = run_service(
            self.services[service], name=f"{self.prefix}{service}", network=self.network, alias=service,
            layout_dir=self.layout_dir, volume_prefix=self.prefix, publish=publish,
        )  # fmt: skip
        self.containers[service] = container
        return container

    def start_superlink(self, timeout: float) -> None:
        """Start the SuperLink container, its port published on ``127.0.0.1:<port>``; wait for its health check."""
        self.start_service("superlink", publish=(f"127.0.0.1:{self.port}:{commands.SUPERLINK_PORT}",))
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the SuperLink answers ``GET /health`` over TLS (the compose health check, from the host)."""
        self._wait(lambda: superlink_healthy(self.port, self.tls.ca_cert), timeout, "SuperLink healthy")

    def wait_status(self, sites: tuple[str, ...], status: str, timeout: float) -> float:
        """Wait until the SuperLink lists every one of ``sites`` with ``status``; return the seconds it took."""
        start = time.monotonic()
        wanted = {self.node_ids[s] for s in sites}
        self._wait(lambda: all(self.node_status().get(n) == status for n in wanted), timeout,
                   f"{', '.join(sites)} {status}", interval=2.0)  # fmt: skip
        return time.monotonic() - start

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")
            time.sleep(interval)

    def submit(self, run_config: Mapping[str, commands.ConfigValue]) -> int:
        """``flwr run`` the app with ``run_config``; return the run id (without waiting for the run)."""
        return int(self.flwr_json(commands.run_command(str(self.app_dir), CONNECTION, dict(run_config)))["run-id"])

    def wait_finished(self, run_id: int, timeout: float) -> str:
        """Wait until ``flwr ls`` reports run ``run_id`` finished; return its status."""
        status = ""

        def finished() -> bool:
            nonlocal status
            listing = self.flwr_json(["flwr", "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"])
            status = str(listing["runs"][0]["status"])
            return status.startswith("finished")

        self._wait(finished, timeout, f"run {run_id} finished", interval=3.0)
        return status

    def results_file(self, run_name: str, name: str) -> str:
        """The text of ``/results/<run_name>/<name>`` in the SuperLink container ('' while it does not exist)."""
        return self.container("superlink").exec(["cat", f"{commands.CONTAINER_RESULTS_DIR}/{run_name}/{name}"]).stdout

    def copy_results(self, run_name: str, dst: Path) -> Path:
        """Copy the run folder out of the SuperLink container (``docker cp``, as the operator would)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        docker(["cp", f"{self.container('superlink').name}:{commands.CONTAINER_RESULTS_DIR}/{run_name}", str(dst)])
        return dst

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every container's output."""
        return "\n".join(f"----- {c.name} -----\n{c.logs(lines)}" for c in self.containers.values())

    def stop(self) -> None:
        """Remove the containers, the network and the named volumes of this deployment (idempotent)."""
        for container in self.containers.values():
            docker(["rm", "-f", container.name], check=False)
        docker(["network", "rm", self.network], check=False)
        for volume in docker(["volume", "ls", "-q", "--filter", f"name={self.prefix}"], check=False).stdout.split():
            docker(["volume", "rm", "-f", volume], check=False)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)  # made by Deployment; the containers use their own /tmp


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not print a line per request (pip fetches the folder's index)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wheel_server(folder: Path | None) -> Iterator[str]:
    """Serve ``folder`` (pip's local wheels) on a loopback port for the image build; yield its URL ('' if none).

    The build runs on the host network, so ``http://127.0.0.1:<port>/`` reaches this thread. The port is
    :data:`WHEEL_PORT` when free: the URL is a build argument, part of Docker's cache key of the torch layer,
    so a fixed one lets a second ``make docker-test`` reuse that layer.
    """
    if folder is None:
        yield ""
        return
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:  # taken: any free port (the torch layer is then rebuilt)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def build_images(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Build both images; their build seconds and sizes (the site build reuses the server's shared layers)."""
    with wheel_server(args.torch_find_links) as find_links:
        build_args = {"TORCH_INDEX_URL": args.torch_index_url, "APP_UID": str(args.uid), "APP_GID": str(args.uid)}
        if args.base_image:
            build_args["PYTHON_IMAGE"] = args.base_image
        if find_links:
            build_args["TORCH_FIND_LINKS"] = find_links
        seconds = {
            tag: build_image(REPO_ROOT / "docker" / dockerfile, tag, REPO_ROOT, build_args, logs / f"{dockerfile}.log")
            for tag, dockerfile in ((SERVER_TAG, "server.Dockerfile"), (SITE_TAG, "site.Dockerfile"))
        }
    return {tag: {"build_s": seconds[tag], "size_bytes": image_size(tag)} for tag in seconds}


# One process per image answers every question: on the vfs storage driver each new container copies the image's
# whole file system, so the checks start as few containers as they can.
IMAGE_PROBE = (
    "import importlib.util, os, flwr, torch, monai, mtmedformer, server, client, strategies; "
    "print(flwr.__version__, torch.__version__, importlib.util.find_spec('ray') is None, os.getuid())"
)


def check_images() -> list[str]:
    """Flower 1.42 in both images, the app's imports work, Ray is absent, the default user is not root."""
    done = []
    for tag in (SERVER_TAG, SITE_TAG):
        probe = docker(["run", "--rm", "--entrypoint", "python", tag, "-c", IMAGE_PROBE], check=False)
        check(probe.returncode == 0, f"{tag}: imports failed: {probe.stderr[-2000:]}")
        flower, torch_version, no_ray, uid = probe.stdout.split()[-4:]
        check(flower.startswith("1.42"), f"{tag}: Flower {flower}, expected 1.42")
        check(no_ray == "True", f"{tag}: Ray is installed (the images must not carry it)")
        check(uid != "0", f"{tag}: default user is root")
        done.append(f"{tag}: Flower {flower}, torch {torch_version}, no Ray, uid {uid}")
    return done


def prepare_layout(work: Path, uid: int) -> dict[str, str]:
    """What the documented steps create next to the compose files, in ``work``; the compose variables to use.

    Key and certificate files go to ``uid`` (the containers' user), as the deployment guide tells operators.
    """
    _run_script("make_certificates.sh", "--out", str(work / "certificates"), "--host", "superlink")
    make_supernode_keys(work / "keys", [*SITES, "intruder"])
    demo_sites(work / "demo-data", num_sites=len(SITES), images_per_site=IMAGES_PER_SITE, image_size=IMAGE_SIZE)
    if os.geteuid() == 0:
        for folder in ("certificates", "keys"):
            for path in [work / folder, *(work / folder).iterdir()]:
                os.chown(path, uid, uid)
    env = {"FLWR_UID": str(uid), "FLWR_GID": str(uid)}
    return env | {f"SITE_{s[-1].upper()}_DATA": str(work / "demo-data" / s) for s in SITES}


def start(work: Path, env: Mapping[str, str], prefix: str) -> ContainerDeployment:
    """SuperLink container, registered keys, three site containers online."""
    services = load_compose(list(COMPOSE_FILES), env)["services"]
    deployment = ContainerDeployment(
        root=work, port=free_port(),
        tls=commands.ServerTls(*(str(work / "certificates" / n) for n in ("ca.crt", "server.pem", "server.key"))),
        keys={name: work / "keys" / name for name in [*SITES, "intruder"]}, server_dir=work / "server",
        app_dir=copy_app(REPO_ROOT, work / "app"), cli_home=work / "cli-home", run_config={}, extra_env={},
        services=services, layout_dir=work, network=f"{prefix}net", prefix=prefix,
    )  # fmt: skip
    docker(["network", "create", deployment.network])
    try:
        deployment.start_superlink(timeout=120)
        deployment.write_connection()
        for site in SITES:
            deployment.register(site)
        for site in SITES:
            deployment.start_service(f"supernode-{site[-1]}")
        deployment.wait_status(SITES, "online", timeout=180)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def check_site_isolation(deployment: ContainerDeployment) -> str:
    """Inside a site container ``/data`` is read-only and the SuperNode (PID 1) does not run as root."""
    site = deployment.container("supernode-a")
    write = site.exec(["sh", "-c", "echo x > /data/written-by-the-container"])
    check(write.returncode != 0, "a site container could write to /data")
    check("Read-only file system" in write.stderr, f"writing to /data failed for another reason: {write.stderr}")
    uids = site.exec(["sh", "-c", "grep '^Uid:' /proc/1/status"]).stdout.split()[1:]
    check(bool(uids) and "0" not in uids, f"the SuperNode process runs with uids {uids}")
    manifest = site.exec(["head", "-n", "1", commands.CONTAINER_MANIFEST])
    check(manifest.returncode == 0, f"the site cannot read its manifest: {manifest.stderr}")
    return f"/data read-only ({write.stderr.strip()}); SuperNode uid {uids[0]}"


def check_intruder(deployment: ContainerDeployment) -> str:
    """A SuperNode container with a key the operator never registered is refused and exits."""
    service = dict(deployment.services["supernode-a"])
    service["volumes"] = [
        replace(m, source=str(deployment.keys["intruder"])) if m.target == commands.CONTAINER_SUPERNODE_KEY else m
        for m in service["volumes"]
    ]
    before = deployment.node_status()
    argv = service_argv(service, name=f"{deployment.prefix}intruder", network=deployment.network, alias="intruder",
                        layout_dir=deployment.layout_dir, volume_prefix=deployment.prefix, detach=False)  # fmt: skip
    result = docker(["run", "--rm", *argv[1:]], timeout=180, check=False)
    output = result.stdout + result.stderr
    check(result.returncode != 0, f"the unregistered SuperNode did not exit with an error:\n{output[-3000:]}")
    check("Failed to activate SuperNode" in output, f"the unregistered SuperNode failed otherwise:\n{output[-3000:]}")
    check(deployment.node_status() == before, "the SuperLink's node list changed")
    return f"unregistered key refused (exit {result.returncode}, 'Failed to activate SuperNode')"


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return _jsonl(path.read_text(encoding="utf-8")) if path.exists() else []


def run_config(name: str, rounds: int, resume: bool = False) -> dict[str, commands.ConfigValue]:
    """The ``--run-config`` of one run: the demo experiment (it ships in the FAB), the test's overrides."""
    return {"experiment": "configs/federated_demo.yaml", "overrides": f"federated.rounds={rounds};{OVERRIDES}",
            "output-dir": commands.CONTAINER_RESULTS_DIR, "run-name": name, "resume": resume}  # fmt: skip


def check_complete_run(deployment: ContainerDeployment, rounds: int, out: Path) -> tuple[str, Path]:
    """A run of ``rounds`` rounds completes; history, report and checkpoints are there."""
    status = deployment.wait_finished(deployment.submit(run_config("reference", rounds)), timeout=1800)
    check(status == "finished:completed", f"the run ended {status}\n{deployment.logs()}")
    run_dir = deployment.copy_results("reference", out / "reference")
    rows = _read_jsonl(run_dir / "rounds.jsonl")
    check([(r["round"], r["failures"], r["sites_trained"]) for r in rows] == [(k, 0, 3) for k in range(1, rounds + 1)],
          f"rounds.jsonl: {[(r['round'], r['failures'], r['sites_trained']) for r in rows]}")  # fmt: skip
    trained = {r["site"] for r in _read_jsonl(run_dir / "sites.jsonl") if r["phase"] == "train"}
    check(trained == set(SITES), f"sites that trained: {sorted(trained)}")
    check((run_dir / "report.md").is_file(), "no report.md")
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    check(f"round_{rounds:03d}.pt" in checkpoints and "best.pt" in checkpoints, f"checkpoints: {checkpoints}")
    return f"{rounds} rounds × 3 sites, report.md, checkpoints {', '.join(checkpoints)}", run_dir


def _wait_rows(deployment: ContainerDeployment, run_name: str, count: int, timeout: float) -> None:
    deployment._wait(lambda: len(_jsonl(deployment.results_file(run_name, "rounds.jsonl"))) >= count, timeout,
                     f"round {count} of {run_name} recorded", interval=1.0)  # fmt: skip


def check_site_killed(deployment: ContainerDeployment, rounds: int, out: Path) -> str:
    """Kill site C while round 2 runs; the round completes with A and B; the restarted C trains again later.

    Rounds that start while C is offline, or before its container has reactivated, train with A and B; the
    run has two more rounds than the others so that the last ones start after C is back online.
    """
    rounds += 2
    run_id = deployment.submit(run_config("site-killed", rounds))
    _wait_rows(deployment, "site-killed", 1, timeout=900)
    deployment.container("supernode-c").kill()
    offline_s = deployment.wait_status(("site-c",), "offline", timeout=300)
    deployment.container("supernode-c").start()
    deployment.wait_status(("site-c",), "online", timeout=180)
    status = deployment.wait_finished(run_id, timeout=1800)
    check(status == "finished:completed", f"the run with a killed site ended {status}\n{deployment.logs()}")
    run_dir = deployment.copy_results("site-killed", out / "site-killed")
    rows = _read_jsonl(run_dir / "rounds.jsonl")
    trained = [(r["round"], r["sites_trained"]) for r in rows]
    check([r for r, _ in trained] == list(range(1, rounds + 1)), f"rounds recorded: {trained}")
    check(trained[1] == (2, 2), f"round 2 (site C killed) should complete with 2 sites: {trained}")
    check(all(n in (2, 3) for _, n in trained[2:]) and trained[-1][1] == 3,
          f"site C did not rejoin after its restart: {trained}")
    failed = {f.get("site") for f in _read_jsonl(run_dir / "failures.jsonl") if f.get("round") == 2}
    check(failed == {"site-c"}, f"round 2's recorded failures name {sorted(map(str, failed))}, expected site-c")
    return (f"site C killed in round 2: round 2 completed with A and B, C offline after {offline_s:.0f} s, "
            f"C trained again from round {next(r for r, n in trained[2:] if n == 3)}")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """Every site's recorded metrics per round and phase, without wall times: what a resumed run must reproduce."""
    timing = ("time", "seconds", "_s")
    rows = [{k: v for k, v in r.items() if not any(t in k for t in timing)}
            for r in _read_jsonl(run_dir / "sites.jsonl")]  # fmt: skip
    return sorted(rows, key=lambda r: (r["round"], r["phase"], r["site"]))


def _largest_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> float:
    """Largest absolute difference of the numeric fields of two histories with the same rows and keys."""
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        for key, value in a.items():
            if isinstance(value, float) and math.isfinite(value):
                worst = max(worst, abs(value - float(b[key])))
    return worst


def check_server_restart(deployment: ContainerDeployment, rounds: int, reference: Path, out: Path) -> str:
    """Kill the server container after round 1, restart it, resume: same rounds and history as ``reference``."""
    deployment.submit(run_config("server-restart", rounds))
    _wait_rows(deployment, "server-restart", 1, timeout=900)
    deployment.container("superlink").kill()
    deployment.container("superlink").start()
    deployment.wait_healthy(timeout=120)
    rejoin_s = deployment.wait_status(SITES, "online", timeout=300)
    status = deployment.wait_finished(deployment.submit(run_config("server-restart", rounds, resume=True)), 1800)
    check(status == "finished:completed", f"the resumed run ended {status}\n{deployment.logs()}")
    run_dir = deployment.copy_results("server-restart", out / "server-restart")
    recorded = [r["round"] for r in _read_jsonl(run_dir / "rounds.jsonl")]
    check(recorded == list(range(1, rounds + 1)), f"rounds after the restart: {recorded} (lost or repeated)")
    got, want = _history(run_dir), _history(reference)
    shape = [(r["round"], r["phase"], r["site"], sorted(r)) for r in got]
    check(shape == [(r["round"], r["phase"], r["site"], sorted(r)) for r in want],
          f"the resumed run's history rows differ from the uninterrupted run's:\n{shape}")  # fmt: skip
    worst = _largest_difference(got, want)
    check(worst <= 1e-6, f"the resumed run's metrics differ from the uninterrupted run's by up to {worst:g}")
    return (f"server killed after round 1 and restarted: sites back online after {rejoin_s:.0f} s; the resumed run "
            f"recorded rounds {recorded}, history equal to the uninterrupted run (largest metric difference {worst:g})")


def overhead(run_dir: Path) -> dict[str, Any]:
    """Per-round wall time against the sites' critical path (:func:`benchmarks.round_overhead.summarise`)."""
    from benchmarks.round_overhead import read_rounds, summarise

    return summarise("containers (TLS + node auth, 3 site containers, warm ClientApp)", read_rounds(run_dir), True)


def print_figures(images: dict[str, Any], summary: dict[str, Any]) -> None:
    """The figures the issue asks the test to print."""
    print("\n| image | build s | size MB |\n|---|---|---|")
    for tag, info in images.items():
        print(f"| {tag} | {info['build_s']:.0f} | {info['size_bytes'] / 1e6:.0f} |")
    print("\n| round | wall s | sites' critical path s | overhead s |\n|---|---|---|---|")
    for row in summary["rounds"]:
        wall, critical = row["time/round_s"], row["time/client_critical_s"]
        print(f"| {row['round']} | {wall:.1f} | {critical:.1f} | {wall - critical:.1f} |")
    print(f"steady-state overhead {summary['steady_state_overhead_s']:.1f} s per round "
          f"(ratio {summary['steady_state_ratio']:.2f}×)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="", help="PYTHON_IMAGE build argument (default: the Dockerfiles')")
    parser.add_argument("--torch-index-url", default="https://download.pytorch.org/whl/cpu")
    parser.add_argument("--torch-find-links", type=Path, default=None,
                        help="a local folder with the torch wheel, served to the build on a loopback port")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each run (at least 3)")
    parser.add_argument("--uid", type=int, default=10001 if os.geteuid() == 0 else os.geteuid(),
                        help="uid:gid the containers run as (default: the images' user when run as root)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures and checks here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, results) for inspection")
    parser.add_argument("--skip-image-checks", action="store_true",
                        help="the images were checked by an earlier --build-only run of this checkout (.ci/run)")
    parser.add_argument("--build-only", action="store_true",
                        help="only build and check the images (.ci/run builds them while the test suite runs; "
                             "the full run after it then finds every layer in Docker's cache)")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (a site is killed in round 2 and must rejoin in round 3)")
    if args.torch_find_links is not None and not args.torch_find_links.is_dir():
        parser.error(f"--torch-find-links {args.torch_find_links}: not a folder")

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mtm-docker-e2e-"))
    prefix = f"mtm-e2e-{os.getpid()}-"
    record: dict[str, Any] = {"checks": [], "workload": {"images_per_site": IMAGES_PER_SITE, "local_epochs": 1,
                                                         "sites": len(SITES), "pack_arrays": True}}  # fmt: skip
    deployment = None
    try:
        (work / "logs").mkdir()
        print("building the server and site images", flush=True)
        record["images"] = build_images(args, work / "logs")
        if not args.skip_image_checks:
            record["checks"] += check_images()
        if args.build_only:
            for tag, info in record["images"].items():
                print(f"built {tag}: {info['build_s']:.0f} s, {info['size_bytes'] / 1e6:.0f} MB", flush=True)
            _write_record(args.json, record, started, build_only=True)
            return 0
        deployment = start(work, prepare_layout(work, args.uid), prefix)
        for step in (check_site_isolation, check_intruder):
            record["checks"].append(step(deployment))
            print("ok:", record["checks"][-1], flush=True)
        outcome, reference = check_complete_run(deployment, args.rounds, work / "results")
        record["checks"].append(outcome)
        print("ok:", outcome, flush=True)
        record["results"] = [overhead(reference)]
        later = (lambda: check_site_killed(deployment, args.rounds, work / "results"),
                 lambda: check_server_restart(deployment, args.rounds, reference, work / "results"))  # fmt: skip
        for run_check in later:  # each outcome printed as soon as its check passed
            record["checks"].append(run_check())
            print("ok:", record["checks"][-1], flush=True)
    except (CheckFailed, DeploymentError, DockerError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
        if deployment is not None:
            print(deployment.logs(80), file=sys.stderr)
        return 1
    finally:
        if deployment is not None:
            deployment.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    record["fused_evaluation"] = True
    _write_record(args.json, record, started)
    print_figures(record["images"], record["results"][0])
    print(f"all {len(record['checks'])} checks passed in {record['total_s']:.0f} s")
    return 0


def _write_record(path: Path | None, record: dict[str, Any], started: float, build_only: bool = False) -> None:
    """Complete ``record`` (wall time, date, whether the images were only built) and write it to ``path``."""
    record.update(total_s=time.monotonic() - started, date=time.strftime("%Y-%m-%d"), build_only=build_only)
    if path is not None:
        from mtmedformer.atomic import atomic_write_json

        atomic_write_json(path, record)


if __name__ == "__main__":
    sys.exit(main())
