"""Exceptions raised on bad user input. Each message names the offending thing and the fix."""


class MTMedFormerError(Exception):
    """Base class of the errors this library raises on bad input."""


class ConfigError(MTMedFormerError, ValueError):
    """A configuration value is unknown, of the wrong type, out of range, or inconsistent."""


class DataError(MTMedFormerError, ValueError):
    """A data set, manifest row or file is missing, unreadable or inconsistent.

    Parameters
    ----------
    message
        What is wrong and how to fix it.
    origin
        Where it was found, e.g. ``"manifest.csv row 14"`` (the header is row 1).
    path
        The file concerned, when there is one.
    """

    def __init__(self, message: str, *, origin: str | None = None, path: object | None = None) -> None:
        self.origin = origin
        self.path = None if path is None else str(path)
        parts = []
        if origin:
            parts.append(origin)
        if self.path:
            parts.append(f"file {self.path}")
        prefix = f"{', '.join(parts)}: " if parts else ""
        super().__init__(prefix + message)
        self.reason = message
