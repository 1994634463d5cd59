"""Generated blocks in Markdown files: the markers, their replacement, and the cell and table formats.

A doc quotes figures only inside blocks, each marker on a line of its own,

    <!-- BEGIN generated:NAME -->
    ...
    <!-- END generated:NAME -->

whose body a script rewrites from the results files (:mod:`benchmarks.docs_tables` for every doc,
:mod:`benchmarks.fl_comparison.report` for the federated comparison's own run). The text around a block is never
touched, so prose and generated figures live side by side without a hand-copied number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtmedformer.atomic import atomic_write_text

# Markers count only on lines of their own, so prose may quote them inline.
_BLOCK = re.compile(r"^(<!-- BEGIN generated:([\w.-]+) -->\n)(.*?)^(<!-- END generated:\2 -->)$", re.S | re.M)
_BEGIN = re.compile(r"^<!-- BEGIN generated:([\w.-]+) -->$", re.M)


def begin_marker(name: str) -> str:
    """The line that opens block ``name``."""
    return f"<!-- BEGIN generated:{name} -->"


def end_marker(name: str) -> str:
    """The line that closes block ``name``."""
    return f"<!-- END generated:{name} -->"


def block_names(text: str) -> list[str]:
    """Names of the blocks in ``text``, in order.

    Raises
    ------
    ValueError
        If a block is opened and not closed by its own end marker (a typo would otherwise swallow the text up to
        a later block's end).
    """
    opened = _BEGIN.findall(text)
    closed = [m.group(2) for m in _BLOCK.finditer(text)]
    if opened != closed:
        missing = [name for name in opened if name not in closed]
        raise ValueError(
            f"generated block(s) {missing} have no matching end marker: close each with '{end_marker('NAME')}' "
            "on its own line"
        )
    return opened


def replace_blocks(text: str, bodies: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with the body of every block named in ``bodies`` replaced; also the names replaced.

    A body is written followed by one newline, so regenerating an unchanged block gives the same text.
    Blocks without a body in ``bodies`` are kept as they are.
    """
    replaced: list[str] = []

    def swap(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in bodies:
            return match.group(0)
        replaced.append(name)
        return match.group(1) + bodies[name].rstrip("\n") + "\n" + match.group(4)

    block_names(text)  # reject unbalanced markers before rewriting anything
    return _BLOCK.sub(swap, text), replaced


def update_doc(doc: str | Path, bodies: Mapping[str, str]) -> list[str]:
    """Rewrite the blocks of the Markdown file ``doc`` that ``bodies`` names (atomically); return their names."""
    path = Path(doc)
    text, replaced = replace_blocks(path.read_text(encoding="utf-8"), bodies)
    atomic_write_text(path, text)
    return replaced


def fmt(value: Any, digits: int = 3) -> str:
    """A metric cell: ``digits`` decimals, ``–`` where undefined."""
    return "–" if value is None else f"{float(value):.{digits}f}"


def pct(fraction: Any, digits: int = 1) -> str:
    """A fraction as a percentage cell (``0.32`` -> ``32.0 %``), ``–`` where undefined."""
    return "–" if fraction is None else f"{100 * float(fraction):.{digits}f} %"


def span(values: Sequence[float], digits: int = 2) -> str:
    """The range of ``values`` as a cell, ``0.50–0.59`` (one value when they are all equal at this precision)."""
    if not values:
        return "–"
    low, high = fmt(min(values), digits), fmt(max(values), digits)
    return low if low == high else f"{low}–{high}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
