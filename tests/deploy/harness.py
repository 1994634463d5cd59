"""A real Flower deployment on 127.0.0.1: TLS SuperLink, authenticated SuperNodes, ``flwr run``, clean stop.

Everything runs as separate processes with the commands of :mod:`tests.deploy.commands` (the same ones the
compose files use) and the project's own executables (``sys.executable``'s folder), so a passing test means
the documented launch sequence works:

1. ``scripts/make_certificates.sh`` -> CA + SuperLink certificate; ``scripts/make_supernode_keys.sh`` -> one
   key pair per site (plus any extra keys a test asks for).
2. ``flower-superlink`` with TLS and ``--enable-supernode-auth`` on a free port; ready when
   ``https://127.0.0.1:<port>/health`` answers over TLS verified with the CA.
3. A ``$FLWR_HOME/config.toml`` with one connection (address + root certificate); every site's public key
   is registered with ``flwr supernode register``.
4. One ``flower-supernode`` per site with ``--node-config "data-manifest='...' site-name='...'"``; ready
   when ``flwr supernode list`` shows all of them online.
5. :meth:`Deployment.run` submits the app with ``flwr run`` and polls ``flwr ls --run-id`` until the run
   has finished; :meth:`Deployment.stop` ends every process it started (and their children) by PID.

Every role has its own working folder and ``FLWR_HOME`` under the test's ``tmp_path``; nothing touches
``~/.flwr`` or the background local SuperLink that ``flwr run`` starts for simulations (ports 39091/39093).

Typical use::

    with start_deployment(tmp_path, {"site-a": manifest_a, "site-b": manifest_b}, {"run-name": "demo"}) as d:
        info = d.run(timeout=120)
        assert info.completed, d.logs()
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.deploy import commands

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
CONNECTION = "mtmedformer-loopback"
# Folders never shipped in a FAB and slow to walk (the FAB builder would skip them via .gitignore anyway).
_SKIP_DIRS = {".git", ".venv", ".flwr", ".cache", "runs", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache"}


class DeploymentError(RuntimeError):
    """A deployment step failed; the message carries the step, the command and the relevant log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of every Flower process: own ``FLWR_HOME``, this venv first on PATH, no network calls.

    ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` makes the SuperLink/SuperNode run the app in this
    environment instead of installing its dependencies; telemetry and the update check are off (no
    internet here, and a hospital network should not call out). SuperExec asks for new tasks every 0.1 s
    instead of Flower's default 1 s (as the images and the Makefile set it): about a second less per round.
    """
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra or {})
    return env


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from ``ps`` (Linux and macOS)."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            table[int(parts[0])] = (int(parts[1]), parts[2] if len(parts) == 3 else "")
    return table


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``root``: the SuperExec and the app processes it spawns."""
    table = _process_table()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, args) in table.items():
            if ppid == parent:
                found.append((pid, args))
                frontier.append(pid)
    return found


def _still_running(processes: Sequence[tuple[int, str]]) -> bool:
    """Whether any of these (pid, command line) processes still runs (zombies count as ended)."""
    table = _process_table()
    return any(pid in table and table[pid][1] == args and "<defunct>" not in args for pid, args in processes)


def _signal_if_same(pid: int, args: str, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid`` only if it still runs the same command (guards against PID reuse)."""
    current = _process_table().get(pid)
    if current is not None and current[1] == args and "<defunct>" not in args:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class ManagedProcess:
    """One started Flower process, its log file, and how to stop it with everything it spawned."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path) -> ManagedProcess:
        """Start ``argv`` in ``cwd`` with stdout and stderr going to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            popen = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
        return cls(name, list(argv), popen, log_path)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit status.

        Raises
        ------
        DeploymentError
            If it still runs after ``timeout`` seconds.
        """
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"{self.name} still runs after {timeout:.0f} s\n{_tail(self.log_text())}") from None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process (SIGKILL after ``grace`` s), then any child it left behind, all by PID."""
        children = _descendants(self.pid) if self.alive() else []
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=grace)
        # The SuperExec watches its parent and exits by itself; app processes may be mid-round.
        deadline = time.monotonic() + grace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid, args in children:
                _signal_if_same(pid, args, sig)
            while time.monotonic() < deadline and _still_running(children):
                time.sleep(0.2)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def copy_app(src: Path, dst: Path) -> Path:
    """Copy the files ``flwr run`` would put into the FAB from ``src`` to ``dst``; return ``dst``.

    The run then uses a snapshot of the checkout, and the checkout is never written to: ``flwr run`` on a
    folder whose ``pyproject.toml`` has a ``[tool.flwr.federations]`` section migrates it into
    ``$FLWR_HOME/config.toml`` and comments it out in the file (Flower 1.42, ``flwr/cli/config_migration.py``);
    the copy drops that section. The selection of files is Flower's own (``.gitignore`` + FAB include rules).
    """
    from flwr.cli.utils import filter_paths_for_publish  # the rules `flwr build` / `flwr run` apply

    files: dict[str, Path] = {}
    for folder, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                files[path.relative_to(src).as_posix()] = path
    for rel, path in filter_paths_for_publish(files).items():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    project = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    project.get("tool", {}).get("flwr", {}).pop("federations", None)
    (dst / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return dst


def make_certificates(out_dir: Path) -> commands.ServerTls:
    """Run ``scripts/make_certificates.sh`` into ``out_dir``."""
    _run_script("make_certificates.sh", "--out", str(out_dir))
    return commands.ServerTls(str(out_dir / "ca.crt"), str(out_dir / "server.pem"), str(out_dir / "server.key"))


def make_supernode_keys(out_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    """Run ``scripts/make_supernode_keys.sh``; return name -> private key path (public key: ``<key>.pub``)."""
    _run_script("make_supernode_keys.sh", "--out", str(out_dir), *names)
    return {name: out_dir / name for name in names}


def _run_script(script: str, *args: str) -> None:
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise DeploymentError(f"scripts/{script} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def demo_sites(out_dir: Path, num_sites: int = 2, images_per_site: int = 6, image_size: int = 32) -> dict[str, Path]:
    """Synthetic per-site data folders written by ``docker/demo_data.py``; site name -> manifest CSV."""
    from mtmedformer.config.data import SyntheticConfig

    spec = importlib.util.spec_from_file_location("docker_demo_data", REPO_ROOT / "docker" / "demo_data.py")
    if spec is None or spec.loader is None:
        raise DeploymentError(f"cannot load {REPO_ROOT / 'docker' / 'demo_data.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = SyntheticConfig(num_sites=num_sites, images_per_site=images_per_site, image_size=image_size)
    return dict(module.write_demo_sites(out_dir, cfg))


def superlink_healthy(port: int, ca_cert: str) -> bool:
    """Whether the SuperLink answers ``GET /health`` over TLS verified with ``ca_cert`` (the compose check)."""
    context = ssl.create_default_context(cafile=ca_cert)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


@dataclass(frozen=True)
class RunInfo:
    """A finished run as the SuperLink reports it.

    Attributes
    ----------
    run_id
        Flower run id.
    status
        ``"finished:completed"``, ``"finished:failed"`` or ``"finished:stopped"``.
    details
        The run's entry of ``flwr ls --run-id <id> --format json`` (timestamps, FAB, traffic, compute time).
    server_log
        The ServerApp's log (``flwr log <id> --show``).
    """

    run_id: int
    status: str
    details: dict[str, Any]
    server_log: str

    @property
    def completed(self) -> bool:
        """Whether the ServerApp returned without error."""
        return self.status == "finished:completed"


@dataclass
class Deployment:
    """A running loopback deployment; build it with :func:`start_deployment`, end it with :meth:`stop`.

    Attributes
    ----------
    root
        The test's folder holding everything below.
    server_dir
        Working folder of the SuperLink and therefore of the ServerApp: relative ``output-dir`` run-config
        values resolve here.
    app_dir
        The copy of the app that ``flwr run`` submits.
    run_config
        Default ``--run-config`` values of :meth:`run`.
    node_ids
        Site name -> SuperNode id assigned at registration.
    """

    root: Path
    port: int
    tls: commands.ServerTls
    keys: dict[str, Path]
    server_dir: Path
    app_dir: Path
    cli_home: Path
    run_config: dict[str, commands.ConfigValue]
    extra_env: dict[str, str]
    superlink: ManagedProcess | None = None
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    # The sites' warm ClientApp servers (client/warm.py) put their sockets here; they are not children of the
    # SuperNodes (each outlives the process that started it) and exit once this folder is gone (stop()).
    runtime_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mtm-warm-", dir="/tmp")))

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink."""
        return f"127.0.0.1:{self.port}"

    # -- the flwr CLI ------------------------------------------------------------------------------------
    def flwr(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a ``flwr`` command (``argv[0] == "flwr"``) with this deployment's ``FLWR_HOME``."""
        return subprocess.run(
            list(argv),
            cwd=self.root,
            env=flower_env(self.cli_home, self.extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def flwr_json(self, argv: Sequence[str], timeout: float = 60.0) -> dict[str, Any]:
        """Run a ``flwr ... --format json`` command and return its JSON answer.

        Raises
        ------
        DeploymentError
            If the command fails or its output is not the expected JSON (the message has both streams).
        """
        result = self.flwr(argv, timeout)
        try:
            answer = json.loads(result.stdout)
        except json.JSONDecodeError:
            answer = None
        if result.returncode != 0 or not isinstance(answer, dict) or not answer.get("success", False):
            raise DeploymentError(
                f"{' '.join(argv)} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n{self.logs()}"
            )
        return answer

    def write_connection(self) -> Path:
        """Write ``$FLWR_HOME/config.toml`` with the connection to this SuperLink (as an operator would)."""
        config = {
            "superlink": {
                "default": CONNECTION,
                CONNECTION: {"address": self.address, "root-certificates": str(Path(self.tls.ca_cert).resolve())},
            }
        }
        path = self.cli_home / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(config), encoding="utf-8")
        return path

    def register(self, name: str) -> int:
        """Register the public key ``<keys>/<name>.pub``; return the node id the SuperLink assigned."""
        public_key = f"{self.keys[name]}.pub"
        answer = self.flwr_json(commands.register_command(public_key, CONNECTION, name))
        self.node_ids[name] = int(answer["node-id"])
        return self.node_ids[name]

    def nodes(self) -> list[dict[str, Any]]:
        """``flwr supernode list``: one dict per SuperNode (``node-id``, ``status``, timestamps)."""
        return list(self.flwr_json(["flwr", "supernode", "list", CONNECTION, "--format", "json"])["nodes"])

    def node_status(self) -> dict[int, str]:
        """Node id -> status (``registered``, ``online``, ``offline``, ...)."""
        return {int(node["node-id"]): str(node["status"]) for node in self.nodes()}

    # -- processes ---------------------------------------------------------------------------------------
    def start_superlink(self, timeout: float) -> None:
        """Start the SuperLink (TLS + SuperNode authentication) and wait until it answers over TLS."""
        argv = commands.superlink_command(
            tls=self.tls,
            supernode_auth=True,
            database=str(self.server_dir / "state.db"),
            host="127.0.0.1",
            port=self.port,
        )
        env = flower_env(self.server_dir / "flwr-home", self.extra_env)
        self.superlink = ManagedProcess.start(
            "superlink", argv, self.server_dir, env, self.root / "logs" / "superlink.log"
        )
        _wait_for(
            lambda: superlink_healthy(self.port, self.tls.ca_cert),
            timeout,
            "SuperLink answering GET /health over TLS",
            self,
            [self.superlink],
        )

    def start_supernode(
        self, site: str, manifest: Path | str, private_key: Path | None, node_config: Mapping[str, Any] | None = None
    ) -> ManagedProcess:
        """Start one SuperNode for ``site`` (``private_key=None``: without an authentication key)."""
        site_dir = self.root / "sites" / site
        argv = commands.supernode_command(
            superlink=self.address,
            node_config=commands.node_config(str(manifest), site, str(site_dir / "state")) | dict(node_config or {}),
            root_certificates=self.tls.ca_cert,
            private_key=None if private_key is None else str(private_key),
            runtime_port=free_port(),
        )
        env = flower_env(site_dir / "flwr-home", {"XDG_RUNTIME_DIR": str(self.runtime_dir), **self.extra_env})
        process = ManagedProcess.start(f"supernode {site}", argv, site_dir, env, self.root / "logs" / f"{site}.log")
        self.supernodes[site] = process
        return process

    def wait_online(self, sites: Sequence[str], timeout: float) -> None:
        """Wait until the SuperLink lists the SuperNodes of ``sites`` as online."""
        wanted = {self.node_ids[s] for s in sites}

        def online() -> bool:
            status = self.node_status()
            return all(status.get(node) == "online" for node in wanted)

        _wait_for(online, timeout, f"SuperNodes {', '.join(sites)} online", self, [self.supernodes[s] for s in sites])

    # -- runs --------------------------------------------------------------------------------------------
    def run(
        self,
        timeout: float = 120.0,
        run_config: Mapping[str, commands.ConfigValue] | None = None,
        poll_interval: float = 0.5,
    ) -> RunInfo:
        """Submit the app with ``flwr run``, wait until the run has finished, and return what it reported.

        Parameters
        ----------
        timeout
            Seconds to wait for the run to finish; the run is stopped (``flwr stop``) when they are up.
        run_config
            ``--run-config`` values for this run, on top of the deployment's defaults.
        poll_interval
            Seconds between ``flwr ls`` status checks. Each check starts a ``flwr`` process (about a second
            of CPU): a benchmark sharing two cores with the sites should poll rarely.

        Raises
        ------
        DeploymentError
            If the run cannot be submitted, or a process of the deployment dies or the run does not finish
            within ``timeout`` (the message holds every log tail).
        """
        config = self.run_config | dict(run_config or {})
        answer = self.flwr_json(commands.run_command(str(self.app_dir), CONNECTION, config))
        run_id = int(answer["run-id"])
        details: dict[str, Any] = {}

        def finished() -> bool:
            nonlocal details
            listing = self.flwr_json(["flwr", "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"])
            details = dict(listing["runs"][0])
            return str(details["status"]).startswith("finished")

        try:
            _wait_for(
                finished, timeout, f"run {run_id} finished", self, [self.superlink, *self.supernodes.values()],
                interval=poll_interval,
            )
        except DeploymentError:
            self.flwr(["flwr", "stop", str(run_id), CONNECTION], timeout=30)
            raise
        try:
            server_log = self.flwr(["flwr", "log", str(run_id), CONNECTION, "--show"], timeout=60).stdout
        except subprocess.TimeoutExpired:
            server_log = f"(flwr log {run_id} --show did not return within 60 s)"
        return RunInfo(run_id, str(details["status"]), details, server_log)

    # -- teardown and diagnostics ------------------------------------------------------------------------
    def processes(self) -> list[ManagedProcess]:
        """Every process this deployment started."""
        return [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every process log, for assertion messages."""
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{_tail(p.log_text(), lines)}" for p in self.processes())

    def stop(self) -> None:
        """Stop the SuperNodes, then the SuperLink, and every child process they started (idempotent)."""
        for process in self.processes():
            process.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)  # the warm servers exit within seconds

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    deployment: Deployment,
    watched: Sequence[ManagedProcess | None],
    interval: float = 0.5,
) -> None:
    """Poll ``condition()`` every ``interval`` s until true; fail early when a watched process exits, late after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        for process in watched:
            if process is not None and not process.alive():
                raise DeploymentError(
                    f"waiting for {what}: {process.name} exited with status {process.popen.returncode}\n"
                    f"command: {' '.join(process.argv)}\n{deployment.logs()}"
                )
        if condition():
            return
        if time.monotonic() > deadline:
            raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}\n{deployment.logs()}")
        time.sleep(interval)


def start_deployment(
    tmp_path: Path,
    sites: Mapping[str, Path | str],
    run_config: Mapping[str, commands.ConfigValue] | None = None,
    *,
    extra_keys: Sequence[str] = (),
    startup_timeout: float = 90.0,
    extra_env: Mapping[str, str] | None = None,
    app_src: Path = REPO_ROOT,
) -> Deployment:
    """Start a TLS SuperLink with SuperNode authentication and one registered SuperNode per site.

    Parameters
    ----------
    tmp_path
        Empty folder for certificates, keys, configs, state, logs and the app copy.
    sites
        Site name -> the site's manifest CSV (passed as ``data-manifest`` in ``--node-config``).
    run_config
        Default ``--run-config`` values of :meth:`Deployment.run`.
    extra_keys
        Names of additional key pairs to create but neither register nor start (for refusal tests).
    startup_timeout
        Seconds allowed for each start-up step (SuperLink healthy, SuperNodes online).
    extra_env
        Extra environment variables of every process (e.g. ``MTMEDFORMER_CACHE``).
    app_src
        Checkout to copy the app from.

    Returns
    -------
    Deployment
        Running; use it as a context manager or call :meth:`Deployment.stop`.

    Raises
    ------
    DeploymentError
        If a step fails; everything started so far is stopped first.
    """
    if not sites:
        raise ValueError("start_deployment needs at least one site")
    deployment = Deployment(
        root=tmp_path,
        port=free_port(),
        tls=make_certificates(tmp_path / "certificates"),
        keys=make_supernode_keys(tmp_path / "keys", [*sites, *extra_keys]),
        server_dir=tmp_path / "server",
        app_dir=copy_app(app_src, tmp_path / "app"),
        cli_home=tmp_path / "cli-home",
        run_config=dict(run_config or {}),
        extra_env=dict(extra_env or {}),
    )
    try:
        deployment.start_superlink(startup_timeout)
        deployment.write_connection()
        for site in sites:
            deployment.register(site)
        for site, manifest in sites.items():
            deployment.start_supernode(site, manifest, deployment.keys[site])
        deployment.wait_online(list(sites), startup_timeout)
    except BaseException:
        deployment.stop()
        raise
    return deployment
