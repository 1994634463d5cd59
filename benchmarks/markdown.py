"""Markdown tables and the generated blocks of the docs.

A doc marks each place a script fills with a pair of comments::

    <!-- BEGIN generated:NAME -->
    ...replaced on every run...
    <!-- END generated:NAME -->

:func:`replace_blocks` puts the table named ``NAME`` between them and leaves everything else as written, so the
prose around a figure is edited by hand and the figure itself never is. The marker is matched without regard
to case and to a space after the colon (``<!-- BEGIN GENERATED: NAME -->`` is the same marker). A block
indented under a list item keeps its indentation: every line of the table gets the BEGIN marker's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtmedformer.atomic import atomic_write_text

BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)(?P<begin><!-- BEGIN generated:[ \t]*(?P<name>[\w.-]+) -->\n)(?P<body>.*?)"
    r"^[ \t]*(?P<end><!-- END generated:[ \t]*(?P=name) -->)",
    re.S | re.I | re.M,
)


def fmt(value: Any, digits: int = 3) -> str:
    """A metric cell: ``digits`` decimals, ``–`` where undefined."""
    return "–" if value is None else f"{float(value):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def block_names(text: str) -> list[str]:
    """Names of the generated blocks of ``text``, in order."""
    return [m.group("name") for m in BLOCK.finditer(text)]


def replace_blocks(text: str, tables: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with every block whose name is in ``tables`` filled with that table; the names filled.

    A block whose name has no table is left as it is.
    """
    replaced: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            return match.group(0)
        replaced.append(name)
        indent = match.group("indent")
        body = "".join(f"{indent}{line}\n" for line in tables[name].rstrip("\n").split("\n"))
        return indent + match.group("begin") + body + indent + match.group("end")

    return BLOCK.sub(fill, text), replaced


def update_doc(doc: Path, tables: Mapping[str, str]) -> list[str]:
    """Fill the generated blocks of the Markdown file ``doc`` from ``tables`` (written atomically); the names filled."""
    text, replaced = replace_blocks(doc.read_text(encoding="utf-8"), tables)
    atomic_write_text(doc, text)
    return replaced
