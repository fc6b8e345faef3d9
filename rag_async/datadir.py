"""The data folder (`RAG_DATA_DIR`): private to its owner, as are the secrets kept in it.

It holds every question, answer and document (Valkey's AOF, embedded Qdrant) and the
embedded Valkey's password, so other users of the machine may not even list it, nor read a
file in it: a process that writes there (`rag-async up` and the processes it starts, a
worker with the embedded store) does so with a umask of 077 (`keep_private`).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def private_folder(path: Path) -> Path:
    """`path`, created `0700` if missing. An existing folder keeps its mode: it may be one
    that the operator chose and shares on purpose (`open_to_others` tells)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def keep_private(path: Path) -> Path:
    """`path` as `private_folder` makes it, and what this process and its children write
    from now on private to the owner too (umask 077: Valkey's AOF and log, Qdrant's files,
    which their writers would otherwise leave readable by all). What earlier runs left open
    to others inside it is closed. A folder that is open to others (the operator's choice,
    `private_folder` says) is left as it is, and so is what it holds."""
    private_folder(path)
    if open_to_others(path):
        return path
    os.umask(0o077)
    for folder, _, files in os.walk(path):
        for name in [".", *files]:
            _close(Path(folder, name))
    return path


def _close(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
            path.chmod(stat.S_IMODE(mode) & 0o700)
    except FileNotFoundError:
        pass  # removed meanwhile: nothing left to close


def open_to_others(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


def stored_secret(path: Path) -> str:
    """The secret kept in the file `path` (`0600`), made up at random on first use: the same
    secret for as long as the file lasts."""
    private_folder(path.parent)
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if secret:
        if open_to_others(path):
            path.chmod(0o600)  # a secret file is ours alone, whoever loosened it
        return secret
    secret = secrets.token_urlsafe(32)  # URL-safe: it goes into a redis:// URL as it is
    # Created 0600 before anything is written to it, and replaced in one step.
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    partial.replace(path)
    return secret
