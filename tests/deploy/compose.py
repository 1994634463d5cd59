"""Read Dockerfiles and compose files the way Docker does, for the static checks (no Docker daemon needed).

Covers what ``docker/`` uses: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` interpolation; YAML
anchors and merge keys; overlay files (``command`` / ``healthcheck`` fields replaced, ``volumes`` merged by
container path, as ``docker compose -f a.yml -f b.yml`` does); short and long volume syntax.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` variable is unset; ``message`` is what compose would print."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute compose variables in every string of ``value`` (nested lists and dicts included)."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, op, arg = match["name"], match["op"], match["arg"] or ""
            current = env.get(name)
            # With a colon, an empty value counts as unset (compose's rule).
            absent = current is None or (op is not None and op.startswith(":") and current == "")
            if op in (":?", "?") and absent:
                raise MissingVariable(f"{name}: {arg}")
            if op in (":-", "-") and absent:
                return arg
            return current or ""

        return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def variables(text: str) -> set[str]:
    """Names of the variables a compose file uses."""
    return {m["name"] for m in _VARIABLE.finditer(text)}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose ``.env`` file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes``."""

    source: str
    target: str
    read_only: bool
    bind: bool  # False: a named volume


def _mount(entry: str | dict[str, Any], named_volumes: Sequence[str]) -> Mount:
    if isinstance(entry, dict):
        source = str(entry["source"])
        bind = entry.get("type", "volume") == "bind"
        return Mount(source, str(entry["target"]), bool(entry.get("read_only", False)), bind)
    parts = entry.split(":")
    source, target = parts[0], parts[1]
    return Mount(source, target, len(parts) > 2 and "ro" in parts[2].split(","), source not in named_volumes)


def load_compose(files: Sequence[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """The merged, interpolated compose model of ``files`` (later files override earlier ones).

    Each service's ``volumes`` becomes a list of :class:`Mount`; ``volumes`` at the top level is the list
    of named volumes.

    Raises
    ------
    MissingVariable
        If a required variable (``${VAR:?...}``) is not in ``env``.
    """
    merged: dict[str, Any] = {"services": {}, "volumes": []}
    for path in files:
        document = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")), env)
        merged["volumes"] += list((document.get("volumes") or {}).keys())
        for name, service in document.get("services", {}).items():
            target = merged["services"].setdefault(name, {"volumes": []})
            for key, value in service.items():
                if key == "volumes":
                    mounts = [_mount(v, merged["volumes"]) for v in value]
                    kept = [m for m in target["volumes"] if m.target not in {n.target for n in mounts}]
                    target["volumes"] = kept + mounts
                elif isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                else:
                    target[key] = value
    return merged


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1]}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """Arguments of ``ENTRYPOINT``/``CMD``: the JSON exec form, or the shell form split like a shell."""
    parsed = yaml.safe_load(arguments) if arguments.startswith("[") else None
    return [str(a) for a in parsed] if isinstance(parsed, list) else shlex.split(arguments)
