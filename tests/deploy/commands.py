"""The launch commands of each deployment role, shared by the loopback test and the compose-file checks.

One function per role builds the argv (Flower 1.42 flags, read from ``flwr/superlink/cli/flower_superlink.py``,
``flwr/supernode/cli/flower_supernode.py`` and ``flwr/cli/``). The loopback test runs these commands on
127.0.0.1; ``test_docker_files`` checks that every ``entrypoint + command`` in ``docker/**/*.yml`` equals the
same function called with the container paths below, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Flower 1.42 serves the Fleet, Control and Runtime APIs of the SuperLink on one HTTP(S) port (default 8000).
SUPERLINK_PORT = 8000

# Paths inside the images (docker/server.Dockerfile, docker/site.Dockerfile) and their mounts.
CONTAINER_DATA_DIR = "/data"
CONTAINER_MANIFEST = "/data/manifest.csv"
CONTAINER_CA_CERT = "/certs/ca.crt"
CONTAINER_SERVER_CERT = "/certs/server.pem"
CONTAINER_SERVER_KEY = "/certs/server.key"
CONTAINER_SUPERNODE_KEY = "/keys/supernode.key"
CONTAINER_STATE_DB = "/var/lib/flwr/state/state.db"
CONTAINER_SITE_STATE_DIR = "/var/lib/flwr/state"  # site image: the ClientApp's state files (a named volume)
CONTAINER_RESULTS_DIR = "/results"

ConfigValue = str | int | float | bool


@dataclass(frozen=True)
class ServerTls:
    """The SuperLink's TLS files (from ``scripts/make_certificates.sh``).

    Attributes
    ----------
    ca_cert
        CA certificate (``ca.crt``), ``--ssl-ca-certfile``.
    cert
        Server certificate (``server.pem``), ``--ssl-certfile``.
    key
        Server private key (``server.key``), ``--ssl-keyfile``.
    """

    ca_cert: str
    cert: str
    key: str


def format_config(values: Mapping[str, ConfigValue]) -> str:
    """Format a ``--node-config`` / ``--run-config`` string: ``key='text' n=3 flag=true``.

    Flower parses it as TOML values (``flwr.common.config.parse_config_args``); strings are written as TOML
    literal strings (single quotes, no escapes) so Windows paths and backslashes survive.

    Raises
    ------
    ValueError
        If a key is not a bare TOML key or a string value contains both quote characters (Flower's parser
        supports neither).
    """
    parts = []
    for key, value in values.items():
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ValueError(f"config key {key!r}: use letters, digits, '-' and '_' only")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        elif "'" not in value:
            text = f"'{value}'"
        elif '"' not in value and "\\" not in value:
            text = f'"{value}"'
        else:
            raise ValueError(f"config value of {key!r} contains both quote characters: {value!r}")
        parts.append(f"{key}={text}")
    return " ".join(parts)


def node_config(manifest: str, site_name: str, state_dir: str | None = None) -> dict[str, ConfigValue]:
    """The SuperNode's ``--node-config`` keys read by the ClientApp (``client/site.py``).

    ``state_dir``: a writable folder where the site keeps its learned task weights across Flower runs (a
    resumed server, a restarted SuperNode: ``client/site_state.py``).
    """
    config: dict[str, ConfigValue] = {"data-manifest": manifest, "site-name": site_name}
    if state_dir is not None:
        config["state-dir"] = state_dir
    return config


def superlink_command(
    *,
    tls: ServerTls | None,
    supernode_auth: bool,
    database: str,
    host: str = "0.0.0.0",
    port: int = SUPERLINK_PORT,
) -> list[str]:
    """``flower-superlink`` argv.

    Parameters
    ----------
    tls
        Certificate files; ``None`` starts the SuperLink with ``--insecure`` (plain HTTP; one-host demo only).
    supernode_auth
        ``--enable-supernode-auth``: only SuperNodes whose public key was registered with
        ``flwr supernode register`` may connect (requires ``tls``).
    database
        SQLite file of the SuperLink state (runs, registered SuperNodes); survives restarts.
    host, port
        Listening address of the single API port (default ``0.0.0.0:8000``, all interfaces).

    Raises
    ------
    ValueError
        If ``supernode_auth`` is requested without TLS (Flower refuses to start in that case).
    """
    if supernode_auth and tls is None:
        raise ValueError("SuperNode authentication needs TLS: pass the certificate files")
    argv = ["flower-superlink"]
    if tls is None:
        argv.append("--insecure")
    else:
        argv += ["--ssl-ca-certfile", tls.ca_cert, "--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key]
    if supernode_auth:
        argv.append("--enable-supernode-auth")
    return [*argv, "--host", host, "--port", str(port), "--database", database]


def supernode_command(
    *,
    superlink: str,
    node_config: Mapping[str, ConfigValue],
    root_certificates: str | None,
    private_key: str | None,
    runtime_port: int | None = None,
) -> list[str]:
    """``mtmedformer-supernode`` argv: ``flower-supernode`` polling every 0.5 s (``client/supernode.py``).

    Parameters
    ----------
    superlink
        ``host:port`` of the SuperLink (no URL scheme).
    node_config
        This site's settings, passed as ``--node-config`` (see :func:`node_config`).
    root_certificates
        CA certificate that signed the SuperLink's certificate; ``None`` connects with ``--insecure``.
    private_key
        The site's SuperNode authentication key (``scripts/make_supernode_keys.sh``); ``None`` connects
        without one (refused by a SuperLink with ``--enable-supernode-auth``).
    runtime_port
        Port of the SuperNode's local Runtime API (127.0.0.1, default 9094); needed only when several
        SuperNodes share one host, as in the loopback test.
    """
    argv = ["mtmedformer-supernode", "--superlink", superlink]
    argv += ["--insecure"] if root_certificates is None else ["--root-certificates", root_certificates]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", private_key]
    if runtime_port is not None:
        argv += ["--port", str(runtime_port)]
    return [*argv, "--node-config", format_config(node_config)]


def register_command(public_key: str, connection: str, name: str) -> list[str]:
    """``flwr supernode register``: the server operator admits one site's public key."""
    return ["flwr", "supernode", "register", public_key, connection, "--name", name, "--format", "json"]


def run_command(app_dir: str, connection: str, run_config: Mapping[str, ConfigValue]) -> list[str]:
    """``flwr run``: submit the app in ``app_dir`` to the SuperLink of ``connection``."""
    argv = ["flwr", "run", app_dir, connection, "--format", "json"]
    for key, value in run_config.items():
        argv += ["--run-config", format_config({key: value})]
    return argv


def container_superlink_command(*, tls: bool) -> list[str]:
    """The SuperLink command of the compose files (container paths)."""
    files = ServerTls(CONTAINER_CA_CERT, CONTAINER_SERVER_CERT, CONTAINER_SERVER_KEY) if tls else None
    return superlink_command(tls=files, supernode_auth=tls, database=CONTAINER_STATE_DB)


def container_supernode_command(*, superlink: str, site_name: str, tls: bool) -> list[str]:
    """The SuperNode command of the compose files (container paths)."""
    return supernode_command(
        superlink=superlink,
        node_config=node_config(CONTAINER_MANIFEST, site_name, CONTAINER_SITE_STATE_DIR),
        root_certificates=CONTAINER_CA_CERT if tls else None,
        private_key=CONTAINER_SUPERNODE_KEY if tls else None,
    )
