"""OpenAI's Files API: POST /v1/files (multipart `file` and `purpose`), list, retrieve, the
content, delete. A file is its key's (another key's is a 404, as an unknown one), counted in
its storage quota with its documents, and checked as a document upload is (its size, its
kind) so that attaching it to a vector store cannot fail for a reason known now. Its bytes
are on disk (store/file_bytes.py), its record in Valkey (store/files.py)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from rag_async.api.auth import Caller
from rag_async.api.openai_compat.pages import PageQuery, file_page_query, list_object, page
from rag_async.api.state import AppState, State
from rag_async.api.storage import store_full, within_storage_quota
from rag_async.domain.errors import BadRequest, NotFound, Unsupported
from rag_async.domain.identity import Principal
from rag_async.domain.schemas import ErrorBody
from rag_async.providers.parsing import check_upload
from rag_async.store.files import StoredFile, new_file_id

router = APIRouter(prefix="/v1", tags=["openai"])

# What a file here is for: retrieval (a vector store's file), and OpenAI's catch-all. Fine
# tuning, batches, evals and images have nothing here to use them.
PURPOSES = ("assistants", "user_data")

_UPLOAD: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                    "required": ["file", "purpose"],
                }
            }
        },
        "required": True,
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 404, 413, 415, 422, 507)
}


def file_object(file: StoredFile) -> dict[str, Any]:
    """A file as OpenAI shows one."""
    return {
        "id": file.file_id,
        "object": "file",
        "bytes": file.size,
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


@router.post("/files", responses=_ERRORS, openapi_extra=_UPLOAD)
async def create_file(request: Request, state: State, caller: Caller) -> dict[str, Any]:
    """Upload a file (text, Markdown, HTML or PDF, within RAG_MAX_DOCUMENT_BYTES) for
    vector stores: `purpose` assistants or user_data."""
    form = await request.form(max_files=1, max_fields=10)
    upload, purpose = form.get("file"), form.get("purpose")
    if any(name.startswith("expires_after") for name in form):
        raise Unsupported(
            "expires_after is not supported: files here last until deleted",
            code="expiry_unsupported",
        )
    if not isinstance(upload, UploadFile):
        raise BadRequest("the upload holds no `file`", code="no_file")
    if not isinstance(purpose, str) or not purpose:
        raise BadRequest("`purpose` is missing: assistants or user_data", code="no_purpose")
    if purpose not in PURPOSES:
        raise Unsupported(
            f"purpose {purpose[:40]!r} is not served here: files are for retrieval, "
            "`assistants` or `user_data`",
            code="unsupported_purpose",
        )
    filename = (upload.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    try:
        content = await upload.read()
    finally:
        await upload.close()
    kind = check_upload(filename, content, max_bytes=state.settings.max_document_bytes)
    await within_storage_quota(state, caller, len(content))
    file = StoredFile(
        file_id=new_file_id(),
        owner=caller.name,
        filename=filename[:255],
        size=len(content),
        purpose=purpose,
        format=kind,
        created_at=int(time.time()),
    )
    await state.file_bytes.write(file.file_id, content)  # first: a record always has its bytes
    if not await state.files.put(file):
        await state.file_bytes.delete(file.file_id)
        raise store_full()
    return file_object(file)


@router.get("/files", responses=_ERRORS)
async def list_files(
    state: State,
    caller: Caller,
    query: Annotated[PageQuery, Depends(file_page_query)],
    purpose: str | None = None,
) -> dict[str, Any]:
    """The key's files, newest first unless `order=asc`."""
    found = await state.files.many(await state.files.ids(caller.name))
    files = [f for f in found if f is not None and purpose in (None, f.purpose)]
    chosen, more = page(files, query, lambda f: f.file_id)
    return list_object([file_object(f) for f in chosen], more)


@router.get("/files/{file_id}", responses=_ERRORS)
async def retrieve_file(file_id: str, state: State, caller: Caller) -> dict[str, Any]:
    return file_object(await owned_file(state, caller, file_id))


@router.get(
    "/files/{file_id}/content",
    responses={200: {"content": {"application/octet-stream": {}}}, **_ERRORS},
)
async def file_content(file_id: str, state: State, caller: Caller) -> Response:
    file = await owned_file(state, caller, file_id)
    content = await state.file_bytes.read(file.file_id)
    if content is None:
        raise NotFound(f"the bytes of {file_id} are gone", code="file_not_found")
    return Response(content, media_type="application/octet-stream")


@router.delete("/files/{file_id}", responses=_ERRORS)
async def delete_file(file_id: str, state: State, caller: Caller) -> dict[str, Any]:
    """The file goes; the vector stores it was attached to keep what was ingested from it,
    as OpenAI's do."""
    file = await owned_file(state, caller, file_id)
    await state.files.remove(file)  # first: a record never names bytes that are gone
    await state.file_bytes.delete(file.file_id)
    return {"id": file.file_id, "object": "file", "deleted": True}


async def owned_file(state: AppState, caller: Principal, file_id: str) -> StoredFile:
    """The caller's file: another key's is not found, exactly like an unknown one."""
    file = await state.files.get(file_id)
    if file is None or not caller.may_see(file.owner):
        raise NotFound(f"no file {file_id[:80]!r}", code="file_not_found")
    return file
