"""Documents: upload (JSON text or multipart files) to enqueue ingestion; list, show, delete.

Each document is ingested by its own job (one per file of a multipart upload), so one bad
file fails alone. What can be told at upload time (the extension, an empty or oversized file)
is refused at once, per file; the rest (a corrupt PDF, HTML with no text) fails in its job.
Deletion is a job too: only a worker holds the Qdrant store (embedded Qdrant is one process's).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ...errors import BadRequest, NotFound, RagError, TooLarge
from ...jobrecord import new_job_id
from ...parsing import check_upload
from ...schemas import (
    AcceptedDocument,
    DocumentAccepted,
    DocumentIn,
    DocumentList,
    DocumentView,
    ErrorBody,
    JobAccepted,
    RejectedFile,
)
from ..bodies import parse_json
from ..enqueue import accepted, enqueue
from ..state import AppState, State

router = APIRouter(tags=["documents"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": DocumentIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "collection": {"type": "string"},
                        "title": {"type": "string", "description": "single-file uploads"},
                        "source": {"type": "string", "description": "single-file uploads"},
                    },
                }
            },
        },
        "required": True,
    }
}


@router.post(
    "/documents",
    status_code=202,
    response_model=DocumentAccepted,
    responses={
        413: {"model": ErrorBody},
        415: {"model": ErrorBody},
        422: {"model": ErrorBody},
        429: {"model": ErrorBody},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def add_documents(
    request: Request,
    state: State,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> DocumentAccepted:
    """Queue documents for ingestion: a JSON body `{text, title, source, document_id,
    collection}`, or multipart files (any field name; text, Markdown, HTML, PDF) with an
    optional `collection` form field. Each document's progress streams at its `events_url`.
    `Idempotency-Key` applies to JSON bodies."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        return await _add_files(request, state)
    body = parse_json(DocumentIn, await request.body())
    return await _add_text(body, request, state, idempotency_key)


async def _add_text(
    body: DocumentIn, request: Request, state: AppState, idempotency_key: str | None
) -> DocumentAccepted:
    if not body.text.strip():
        raise BadRequest("the document has no text", code="empty_document")
    size = len(body.text.encode())
    if size > state.settings.max_document_bytes:
        raise TooLarge(
            f"the document is {size} bytes; the limit is {state.settings.max_document_bytes}",
            code="document_too_large",
        )
    title = (body.title or body.source or "untitled").strip() or "untitled"
    collection = body.collection or state.settings.default_collection
    document_id = body.document_id or _document_id(body.source or title, collection, state)
    job_id = new_job_id()
    claimed = await state.idempotency.claim(
        idempotency_key, body.model_dump_json().encode(), job_id
    )
    if claimed == job_id:
        await _enqueue_ingest(
            state,
            request,
            job_id,
            body.text.encode(),
            {
                "document_id": document_id,
                "title": title,
                "source": body.source or "",
                "collection": collection,
            },
        )
    one = _accepted_document(document_id, claimed, None)
    return accepted(DocumentAccepted, claimed, document_id=document_id, documents=[one])


async def _add_files(request: Request, state: AppState) -> DocumentAccepted:
    """One ingestion job per acceptable file; the others are listed as rejected, or, when no
    file is acceptable, the request fails with their reason."""
    form = await request.form()
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise BadRequest("the upload holds no file", code="no_file")
    collection = _form_collection(form.get("collection"), state)
    # A single file may be given its own title and source.
    single = len(files) == 1
    title = (_form_text(form.get("title")) if single else None) or ""
    given_source = _form_text(form.get("source")) if single else None
    documents: list[AcceptedDocument] = []
    errors: list[RagError] = []
    rejected: list[RejectedFile] = []
    for upload in files:
        filename = upload.filename or "upload"
        try:
            content = await upload.read()
            kind = check_upload(filename, content, max_bytes=state.settings.max_document_bytes)
        except RagError as error:
            errors.append(error)
            rejected.append(_rejected(filename, error))
            continue
        finally:
            await upload.close()
        source = given_source or filename
        document_id = _document_id(source, collection, state)
        job_id = new_job_id()
        fields = {"document_id": document_id, "title": title, "source": source}
        fields |= {"collection": collection, "filename": filename, "format": kind}
        await _enqueue_ingest(state, request, job_id, content, fields)
        documents.append(_accepted_document(document_id, job_id, filename))
    if not documents:
        raise _none_accepted(errors)
    first = documents[0]
    return accepted(
        DocumentAccepted,
        first.job_id,
        document_id=first.document_id,
        documents=documents,
        rejected=rejected,
    )


def _form_collection(value: object, state: AppState) -> str:
    collection = _form_text(value) or state.settings.default_collection
    try:
        DocumentIn.model_validate({"text": "", "collection": collection})
    except ValidationError:
        raise BadRequest(
            f"invalid collection name {collection!r}", code="invalid_collection"
        ) from None
    return collection


def _rejected(filename: str, error: RagError) -> RejectedFile:
    return RejectedFile(
        filename=filename, status=error.status_code, code=error.code, message=error.message
    )


def _none_accepted(errors: list[RagError]) -> RagError:
    if len(errors) == 1:
        return errors[0]
    return BadRequest(
        "no file of the upload can be ingested: " + "; ".join(e.message for e in errors),
        code="no_file_accepted",
    )


async def _enqueue_ingest(
    state: AppState, request: Request, job_id: str, content: bytes, fields: dict[str, str]
) -> None:
    await enqueue(state, request, job_id, "ingest", fields, upload=content)
    await state.registry.put(
        fields["document_id"],
        {
            **{k: v for k, v in fields.items() if v},
            "size": len(content),
            "status": "queued",
            "job_id": job_id,
            "error": "",
        },
    )


@router.get("/documents", response_model=DocumentList)
async def list_documents(state: State, collection: str | None = None) -> DocumentList:
    """Every document (of `collection`, if given), most recently ingested first."""
    documents = await state.registry.all()
    if collection is not None:
        documents = [d for d in documents if d.collection == collection]
    return DocumentList(documents=documents)


@router.get(
    "/documents/{document_id}", response_model=DocumentView, responses={404: {"model": ErrorBody}}
)
async def show_document(document_id: str, state: State) -> DocumentView:
    document = await state.registry.get(document_id)
    if document is None:
        raise NotFound(f"no document {document_id!r}", code="document_not_found")
    return document


@router.delete(
    "/documents/{document_id}",
    status_code=202,
    response_model=DocumentAccepted,
    responses={404: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def delete_document(document_id: str, request: Request, state: State) -> DocumentAccepted:
    """Queue the removal of every chunk of the document; follow it at `events_url`."""
    document = await state.registry.get(document_id)
    if document is None:
        raise NotFound(f"no document {document_id!r}", code="document_not_found")
    job_id = new_job_id()
    await enqueue(state, request, job_id, "delete", {"document_id": document_id})
    await state.registry.put(document_id, {"status": "deleting", "job_id": job_id})
    one = _accepted_document(document_id, job_id, document.filename)
    return accepted(DocumentAccepted, job_id, document_id=document_id, documents=[one])


def _accepted_document(document_id: str, job_id: str, filename: str | None) -> AcceptedDocument:
    urls = accepted(JobAccepted, job_id)
    return AcceptedDocument(
        document_id=document_id,
        job_id=job_id,
        filename=filename,
        status_url=urls.status_url,
        events_url=urls.events_url,
    )


def _form_text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _document_id(name: str, collection: str, state: AppState) -> str:
    """Stable per source (and collection), so ingesting the same file again replaces it
    rather than adding."""
    if collection != state.settings.default_collection:
        name = f"{collection}\x00{name}"
    return hashlib.sha256(name.encode()).hexdigest()[:24]
