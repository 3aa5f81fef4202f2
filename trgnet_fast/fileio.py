"""Small file helpers shared by the writers of results (CSV, PNG, text)."""
from __future__ import annotations

import os


def prepared_path(path) -> str:
    """``path`` as a string, with its parent folder created."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path
