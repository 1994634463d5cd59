"""Names from outside (a run's name, a site's name) that become one folder inside a root folder."""

from __future__ import annotations

import os


def is_plain_folder_name(name: str) -> bool:
    """True if ``name`` is one folder name that stays inside its parent and is not hidden.

    Refused: the empty name, names starting with ``.`` (also ``.`` and ``..``) or ``~``, and names holding a
    path separator or a control character.
    """
    return bool(name) and not (
        name.startswith((".", "~"))
        or any(sep in name for sep in ("/", "\\", os.sep))
        or any(ord(ch) < 32 for ch in name)
    )
