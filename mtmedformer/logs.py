"""Logging set-up for entry points (CLI, Flower apps): the project's loggers to stderr, third parties quiet."""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("mtmedformer", "server", "client", "strategies")
_QUIET = ("httpx", "httpcore", "matplotlib", "PIL")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the project's log records to stderr once, without touching the root logger Flower configures."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, "_mtmedformer", False) for h in logger.handlers):
            handler._mtmedformer = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.propagate = False
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
