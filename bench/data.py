"""Where the benchmarks find GoEmotions when no folder is given: beside dair-ai/emotion's
candidates (``core.settings.DATA_DIR_CANDIDATES``)."""

from __future__ import annotations

from core.settings import DATA_DIR_CANDIDATES

GOEMOTIONS_CANDIDATES = tuple(candidate.with_name("goemotions") for candidate in DATA_DIR_CANDIDATES)


def default_goemotions() -> str | None:
    """The first GoEmotions folder (one with labels.txt) among the candidates, or None."""
    for candidate in GOEMOTIONS_CANDIDATES:
        if (candidate / "labels.txt").is_file():
            return str(candidate.resolve())
    return None
