"""Print the project's runtime dependencies for the server and site images, one requirement per line.

The images install ``pyproject.toml``'s ``[project] dependencies`` with two changes:

- ``torch`` and ``torchvision`` are left out: the Dockerfile installed them already from ``TORCH_INDEX_URL``
  (a CPU or CUDA build), and a second resolution against PyPI could replace them with another build;
- Flower's ``simulation`` extra is dropped: it pulls in Ray (hundreds of MB), which only ``flwr run`` on a
  laptop uses; a SuperLink or SuperNode never starts Ray.

Usage (inside the Dockerfile)::

    python image_requirements.py pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PREINSTALLED = {"torch", "torchvision"}
DROPPED_EXTRAS = {"simulation"}
_REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?(?P<rest>.*)$")


def image_requirements(pyproject: str) -> list[str]:
    """The image's requirement lines from the text of a ``pyproject.toml``.

    Raises
    ------
    ValueError
        If the file has no ``[project] dependencies`` list or a dependency is not a plain requirement.
    """
    dependencies = tomllib.loads(pyproject).get("project", {}).get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        raise ValueError("pyproject.toml: no [project] dependencies list")
    lines = []
    for dependency in dependencies:
        match = _REQUIREMENT.match(str(dependency))
        if match is None:
            raise ValueError(f"pyproject.toml: cannot read dependency {dependency!r}")
        name = match["name"]
        if re.sub(r"[-_.]+", "-", name).lower() in PREINSTALLED:
            continue
        named = [e.strip() for e in (match["extras"] or "").split(",")]
        extras = [e for e in named if e and e not in DROPPED_EXTRAS]
        lines.append(f"{name}{'[' + ','.join(extras) + ']' if extras else ''}{match['rest'].rstrip()}")
    return lines


def main(argv: list[str]) -> int:
    """Print the requirements of the ``pyproject.toml`` named by ``argv[0]``; 2 on bad usage or input."""
    if len(argv) != 1:
        print("usage: python image_requirements.py PYPROJECT_TOML", file=sys.stderr)
        return 2
    try:
        lines = image_requirements(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError, tomllib.TOMLDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
