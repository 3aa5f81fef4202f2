"""Small file helpers shared by the readers of text files and the writers of results (CSV, PNG, text)."""
from __future__ import annotations

import os
from contextlib import contextmanager


def prepared_path(path) -> str:
    """``path`` as a string, with its parent folder created."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path


@contextmanager
def open_text(path, newline=None):
    """``open(path)`` as UTF-8 text; bytes that do not decode, met while the block reads, raise ValueError naming
    the file (instead of a bare UnicodeDecodeError)."""
    with open(path, encoding="utf-8", newline=newline) as f:
        try:
            yield f
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: expected a UTF-8 text file, got bytes that do not decode ({e.reason} at "
                             f"byte {e.start})") from None
