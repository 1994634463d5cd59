"""Static checks of docker/: Dockerfiles, compose layouts, and that they launch what the loopback test runs.

No Docker daemon is needed; ``make docker-test`` (``tests/deploy/docker_e2e.py``) builds and runs the images.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy import commands
from tests.deploy.compose import (
    MissingVariable,
    dockerfile_instructions,
    exec_form,
    interpolate,
    load_compose,
    read_env_file,
    variables,
)
from tests.deploy.harness import REPO_ROOT, demo_sites, make_certificates, make_supernode_keys

DOCKER = REPO_ROOT / "docker"
TWO_HOST = DOCKER / "two-host"
DOCKERFILES = ["server.Dockerfile", "site.Dockerfile"]
SITES = ("site-a", "site-b", "site-c")
SITE_ENV = {"SUPERLINK_ADDRESS": "fl.example.org:8000", "SITE_NAME": "hospital-x"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the documented steps create next to the compose files: certificates, keys, site data, results."""
    root = tmp_path_factory.mktemp("generated")
    make_certificates(root / "certificates")
    make_supernode_keys(root / "keys", SITES)
    demo_sites(root / "demo-data", num_sites=len(SITES), images_per_site=6, image_size=32)
    (root / "results").mkdir()  # docs/deployment.md: the server operator creates it
    return root


def _layouts(generated: Path) -> dict[str, tuple[list[Path], dict[str, str], dict[str, list[str]]]]:
    """Layout -> (compose files, environment, expected entrypoint + command of every service)."""
    site_env = SITE_ENV | {
        "SITE_DATA": str(generated / "demo-data" / "site-a"),
        "SUPERNODE_KEY": str(generated / "keys" / "site-a"),
    }
    one_host = {
        tls: {"superlink": commands.container_superlink_command(tls=tls)}
        | {
            f"supernode-{s[-1]}": commands.container_supernode_command(superlink="superlink:8000", site_name=s, tls=tls)
            for s in SITES
        }
        for tls in (False, True)
    }
    return {
        "one-host": ([DOCKER / "compose.yml"], {}, one_host[False]),
        "one-host-tls": ([DOCKER / "compose.yml", DOCKER / "compose.tls.yml"], {}, one_host[True]),
        "two-host-server": (
            [TWO_HOST / "server.compose.yml"],
            {},
            {"superlink": commands.container_superlink_command(tls=True)},
        ),
        "two-host-site": (
            [TWO_HOST / "site.compose.yml"],
            site_env,
            {
                "supernode": commands.container_supernode_command(
                    superlink=SITE_ENV["SUPERLINK_ADDRESS"], site_name=SITE_ENV["SITE_NAME"], tls=True
                )
            },
        ),
    }


LAYOUT_NAMES = ["one-host", "one-host-tls", "two-host-server", "two-host-site"]


def _entrypoint(compose_dir: Path, service: dict) -> list[str]:
    build = service["build"]
    dockerfile = (compose_dir / build["context"] / build["dockerfile"]).resolve()
    entrypoints = [exec_form(args) for word, args in dockerfile_instructions(dockerfile) if word == "ENTRYPOINT"]
    return entrypoints[-1]


def _model(layout: str, generated: Path) -> tuple[Path, dict, dict[str, list[str]]]:
    files, env, expected = _layouts(generated)[layout]
    return files[0].parent, load_compose(files, env), expected


def _is_supernode(argv: list[str]) -> bool:
    return argv[0] == "mtmedformer-supernode"


# -- Dockerfiles ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copies_existing_paths_that_the_dockerignore_keeps(dockerfile: str) -> None:
    # Prepare
    instructions = dockerfile_instructions(DOCKER / dockerfile)
    kept = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }

    # Execute
    sources = [s.rstrip("/") for word, args in instructions if word == "COPY" for s in args.split()[:-1]]

    # Assert
    assert sources, f"{dockerfile} copies nothing"
    if "." in sources:  # the whole context: .dockerignore must keep every package the installed app needs
        assert {"pyproject.toml", "README.md", "mtmedformer", "strategies", "server", "client"} <= kept, kept
    for source in (s for s in sources if s != "."):
        assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source}: not in the repository"
        assert source in kept, f"{dockerfile}: COPY {source} is excluded by .dockerignore"


def test_server_and_site_images_share_their_dependency_layers() -> None:
    # Prepare
    marker = "# ---- image-specific from here ----"
    texts = {name: (DOCKER / name).read_text(encoding="utf-8") for name in DOCKERFILES}

    # Execute
    shared = {name: text[text.index("ARG PYTHON_IMAGE") : text.index(marker)] for name, text in texts.items()}

    # Assert: identical instructions -> one build of torch, the dependencies and the code serves both images
    assert shared["server.Dockerfile"] == shared["site.Dockerfile"]
    assert "FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1" in shared["site.Dockerfile"]
    assert "pip install --no-deps ." in shared["site.Dockerfile"], "the last install must not re-resolve torch"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_runs_as_an_unprivileged_user(dockerfile: str) -> None:
    # Prepare
    instructions = dockerfile_instructions(DOCKER / dockerfile)
    defaults = dict(a.split("=", 1) for word, a in instructions if word == "ARG" and "=" in a)

    # Execute
    users = [interpolate(args, defaults) for word, args in instructions if word == "USER"]

    # Assert
    assert users, f"{dockerfile} has no USER instruction (would run as root)"
    assert users[-1].split(":")[0] not in ("", "root", "0"), users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_installs_the_torch_pinned_in_pyproject(dockerfile: str) -> None:
    # Prepare
    pins = dict(
        re.fullmatch(r"([A-Za-z0-9_-]+)==(\S+)", dep).groups()  # type: ignore[union-attr]
        for dep in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
        if re.fullmatch(r"(torch|torchvision)==\S+", dep)
    )

    # Execute
    args = dict(
        a.split("=", 1) for word, a in dockerfile_instructions(DOCKER / dockerfile) if word == "ARG" and "=" in a
    )

    # Assert
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


# -- compose layouts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_commands_equal_the_loopback_commands(layout: str, generated: Path) -> None:
    # Prepare
    compose_dir, model, expected = _model(layout, generated)

    # Execute
    actual = {
        name: _entrypoint(compose_dir, service) + [str(a) for a in service["command"]]
        for name, service in model["services"].items()
    }

    # Assert
    assert actual == expected


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_mounts_site_data_read_only_and_each_site_its_own(layout: str, generated: Path) -> None:
    # Prepare
    _, model, expected = _model(layout, generated)
    supernodes = {n: s for n, s in model["services"].items() if _is_supernode(expected[n])}

    # Execute
    data_mounts = {
        n: [m for m in s["volumes"] if m.target == commands.CONTAINER_DATA_DIR] for n, s in supernodes.items()
    }

    # Assert
    for name, mounts in data_mounts.items():
        assert len(mounts) == 1 and mounts[0].bind and mounts[0].read_only, f"{layout}/{name}: {mounts}"
        manifest = re.search(r"data-manifest='([^']+)'", " ".join(expected[name]))
        assert manifest and manifest[1].startswith(commands.CONTAINER_DATA_DIR + "/")
    sources = [mounts[0].source for mounts in data_mounts.values()]
    assert len(set(sources)) == len(sources), f"{layout}: two sites share a data folder"


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_bind_mounts_exist_after_the_documented_steps(layout: str, generated: Path) -> None:
    # Prepare
    compose_dir, model, _ = _model(layout, generated)

    # Execute
    missing = [
        f"{name}: {m.source}"
        for name, service in model["services"].items()
        for m in service["volumes"]
        if m.bind
        and not (
            Path(m.source).exists()
            if Path(m.source).is_absolute()
            else (compose_dir / m.source).exists() or (generated / m.source).exists()
        )
    ]

    # Assert
    assert missing == []


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_command_paths_are_mounted(layout: str, generated: Path) -> None:
    # Prepare
    _, model, expected = _model(layout, generated)
    container_dirs = ("/certs/", "/keys/", "/data/")

    # Execute
    unmounted = [
        f"{name}: {arg}"
        for name, service in model["services"].items()
        for arg in expected[name]
        if arg.startswith(container_dirs)
        and not any(arg == m.target or arg.startswith(m.target.rstrip("/") + "/") for m in service["volumes"])
    ]

    # Assert
    assert unmounted == []


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_publishes_only_the_superlink_port_and_runs_unprivileged(layout: str, generated: Path) -> None:
    # Prepare
    _, model, expected = _model(layout, generated)

    # Execute
    ports = {name: [str(p).rsplit(":", 1)[-1] for p in s.get("ports", [])] for name, s in model["services"].items()}
    users = {name: str(s.get("user", "")).split(":")[0] for name, s in model["services"].items()}

    # Assert
    for name, published in ports.items():
        assert published == ([] if _is_supernode(expected[name]) else [str(commands.SUPERLINK_PORT)]), name
    assert all(user not in ("", "0", "root") for user in users.values()), users


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_compose_health_check_matches_the_superlink_scheme(layout: str, generated: Path) -> None:
    # Prepare
    _, model, expected = _model(layout, generated)
    superlinks = {n: s for n, s in model["services"].items() if not _is_supernode(expected[n])}

    # Execute
    checks = {name: " ".join(s["healthcheck"]["test"]) for name, s in superlinks.items()}

    # Assert
    for name, check in checks.items():
        tls = "--insecure" not in expected[name]
        assert f"{'https' if tls else 'http'}://localhost:{commands.SUPERLINK_PORT}/health" in check, check
        assert (commands.CONTAINER_CA_CERT in check) == tls


@pytest.mark.parametrize("variable", ["SUPERLINK_ADDRESS", "SITE_NAME", "SITE_DATA", "SUPERNODE_KEY"])
def test_site_layout_names_a_missing_required_variable(variable: str, generated: Path) -> None:
    # Prepare
    files, env, _ = _layouts(generated)["two-host-site"]
    env = {k: v for k, v in env.items() if k != variable}

    # Execute / Assert
    with pytest.raises(MissingVariable, match=variable):
        load_compose(files, env)


@pytest.mark.parametrize(
    ("compose_file", "env_example"),
    [
        ("server.compose.yml", "server.env.example"),
        ("site.compose.yml", "site.env.example"),
        ("site.gpu.yml", "site.env.example"),
    ],
)
def test_env_example_documents_every_variable(compose_file: str, env_example: str) -> None:
    # Prepare
    example = (TWO_HOST / env_example).read_text(encoding="utf-8")

    # Execute
    undocumented = sorted(
        v for v in variables((TWO_HOST / compose_file).read_text(encoding="utf-8")) if v not in example
    )

    # Assert
    assert undocumented == []
    assert read_env_file(TWO_HOST / env_example), f"{env_example} sets no variable"


def test_gpu_overlay_builds_cuda_torch_and_reserves_gpus(generated: Path) -> None:
    # Prepare
    files, env, _ = _layouts(generated)["two-host-site"]
    env = env | {"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126"}

    # Execute
    service = load_compose([*files, TWO_HOST / "site.gpu.yml"], env)["services"]["supernode"]

    # Assert
    assert service["build"]["args"]["TORCH_INDEX_URL"] == env["TORCH_INDEX_URL"]
    assert service["build"]["dockerfile"] == "docker/site.Dockerfile"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_interpolation_follows_compose_rules() -> None:
    # Prepare
    env = {"SET": "x", "EMPTY": ""}

    # Execute
    values = interpolate(["${SET}", "${UNSET:-d}", "${EMPTY:-d}", "${EMPTY-d}", "$${SET}", "a${SET}b"], env)

    # Assert
    assert values == ["x", "d", "d", "", "${SET}", "axb"]
