"""``DataError``: a data problem that names the file (or key) and the problem (datasets.md §3)."""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(ValueError):
    """``"<path>: <problem>"``; ``.path`` and ``.problem`` keep both parts for reports."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")
