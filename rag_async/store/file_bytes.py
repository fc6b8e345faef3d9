"""The bytes of uploaded files (/v1/files), on disk in the data folder's `files/`: kept until
the file is deleted, so never in Valkey, whose memory holds work in flight only.

Only the API reads them: attaching a file to a vector store hands its bytes to an ingestion
job as any upload is (store/uploads.py). Several API replicas on different hosts need that
folder on a volume they share. Each file is written whole, then renamed into place, so a
reader never sees half of one; disk calls run in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path

from rag_async.datadir import private_folder

_NAME = re.compile(r"file-[0-9a-f]{24}")


class FileBytes:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def write(self, file_id: str, content: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(file_id), content)

    async def read(self, file_id: str) -> bytes | None:
        """The file's bytes, or None if they are gone."""
        try:
            return await asyncio.to_thread(self._path(file_id).read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, file_id: str) -> None:
        """Safe to repeat."""
        await asyncio.to_thread(self._path(file_id).unlink, missing_ok=True)

    def _path(self, file_id: str) -> Path:
        if not _NAME.fullmatch(file_id):  # ids are ours; never a path of a client's choosing
            raise ValueError(f"not a file id: {file_id!r}")
        return self._folder / file_id

    def _write(self, path: Path, content: bytes) -> None:
        private_folder(path.parent)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        partial.replace(path)
