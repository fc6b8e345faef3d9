"""Documents: upload (JSON text or multipart files) to enqueue ingestion; list, show, delete.

Each document is ingested by its own job (one per file of a multipart upload), so one bad
file fails alone. What can be told at upload time (the extension, an empty or oversized file)
is refused at once, per file; the rest (a corrupt PDF, HTML with no text) fails in its job.
Deletion is a job too: only a worker holds the Qdrant store (embedded Qdrant is one process's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from rag_async.api.auth import Caller
from rag_async.api.bodies import parse_json
from rag_async.api.document_ids import chosen_id, derived_id, scoped_id
from rag_async.api.enqueue import Submission, enqueue
from rag_async.api.idempotent import create_once
from rag_async.api.state import AppState, State
from rag_async.api.storage import within_storage_quota
from rag_async.domain.document import DocumentRecord, DocumentStatus
from rag_async.domain.errors import BadRequest, NotFound, RagError, TooLarge
from rag_async.domain.filters import Attributes, AttributeValue
from rag_async.domain.identity import Principal
from rag_async.domain.job import new_job_id, record_fields
from rag_async.domain.schemas import (
    AcceptedDocument,
    DocumentAccepted,
    DocumentIn,
    DocumentList,
    DocumentView,
    ErrorBody,
    JobAccepted,
    RejectedFile,
)
from rag_async.providers.parsing import check_upload
from rag_async.webhooks import webhook_fields

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
                        "webhook_url": {"type": "string", "description": "called as each ends"},
                        "attributes": {
                            "type": "string",
                            "description": "a JSON object: every file's attributes",
                        },
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
        400: {"model": ErrorBody},  # a webhook_url refused
        413: {"model": ErrorBody},
        415: {"model": ErrorBody},
        422: {"model": ErrorBody},
        429: {"model": ErrorBody},
        507: {"model": ErrorBody},  # Valkey nearly full
    },
    openapi_extra=_UPLOAD_BODY,
)
async def add_documents(
    request: Request,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> DocumentAccepted:
    """Queue documents for ingestion: a JSON body `{text, title, source, document_id,
    collection, attributes, webhook_url}`, or multipart files (any field name; text,
    Markdown, HTML, PDF) with optional `collection`, `webhook_url` and `attributes` (a JSON
    object, given to every file) form fields. A document's `attributes` are what a search's
    `filters` compare; uploading it again replaces them. Each document's progress
    streams at its `events_url`; its `webhook_url` is called when its job ends.
    `Idempotency-Key` applies to JSON bodies."""
    submission = Submission(state, request, caller)
    if request.headers.get("content-type", "").startswith("multipart/"):
        return await _add_files(submission)
    body = parse_json(DocumentIn, await request.body())
    submission = replace(submission, webhook_url=body.webhook_url)
    return await _add_text(body, submission, idempotency_key)


async def _add_text(
    body: DocumentIn, submission: Submission, idempotency_key: str | None
) -> DocumentAccepted:
    state, caller = submission.state, submission.caller
    if not body.text.strip():
        raise BadRequest("the document has no text", code="empty_document")
    size = len(body.text.encode())
    if size > state.settings.max_document_bytes:
        raise TooLarge(
            f"the document is {size} bytes; the limit is {state.settings.max_document_bytes}",
            code="document_too_large",
        )
    title = (body.title or body.source or "untitled").strip() or "untitled"
    collection = caller.collection(body.collection or state.settings.default_collection)
    if body.document_id:
        document_id = await chosen_id(state, caller, body.document_id)
    else:
        document_id = await derived_id(state, caller, body.source or title, collection)
    await _within_storage_quota(submission, document_id, size)
    job_id = new_job_id()
    fields = {"document_id": document_id, "title": title, "source": body.source or ""}
    fields |= attribute_fields(body.attributes)

    async def create() -> None:
        content = body.text.encode()
        await enqueue_ingest(submission, job_id, content, fields | {"collection": collection})

    request = body.model_dump_json().encode()
    claimed = await create_once(submission, idempotency_key, request, job_id, create)
    one = _accepted_document(submission, document_id, claimed, None)
    return submission.accepted(DocumentAccepted, claimed, document_id=document_id, documents=[one])


async def _add_files(submission: Submission) -> DocumentAccepted:
    """One ingestion job per acceptable file; the others are listed as rejected, or, when no
    file is acceptable, the request fails with their reason. Each file's job is created in
    one step or not at all (jobs.py), so the answer tells each file's fate: a file listed as
    rejected has no job, and a limit met part-way (a full Valkey included) refuses that file
    and, as a rule, those after it, never the ones queued before."""
    state = submission.state
    most = state.settings.max_files_per_upload
    # Starlette's own cap (a 400) only beyond ours; the body's size bounds the parsing anyway.
    form = await submission.request.form(max_files=max(most, 1000))
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise BadRequest("the upload holds no file", code="no_file")
    if len(files) > most:
        raise TooLarge(
            f"the upload holds {len(files)} files; at most {most} may come in one request",
            code="too_many_files",
        )
    collection = _form_collection(form.get("collection"), submission)
    attributes = attribute_fields(_form_attributes(form.get("attributes")))
    webhook_url = _form_text(form.get("webhook_url"))
    webhook_fields(state.settings, webhook_url)  # a URL refused once, not once per file
    submission = replace(submission, webhook_url=webhook_url)
    # A single file may be given its own title and source.
    single = len(files) == 1
    title = (_form_text(form.get("title")) if single else None) or ""
    given_source = _form_text(form.get("source")) if single else None
    documents: list[AcceptedDocument] = []
    errors: list[RagError] = []
    rejected: list[RejectedFile] = []
    for upload in files:
        filename = upload.filename or "upload"
        fields = {"title": title, "source": given_source or filename, "collection": collection}
        fields |= attributes
        try:
            documents.append(await _add_file(submission, upload, filename, fields))
        except RagError as error:
            errors.append(error)
            rejected.append(_rejected(filename, error))
    if not documents:
        raise _none_accepted(errors)
    first = documents[0]
    return submission.accepted(
        DocumentAccepted,
        first.job_id,
        document_id=first.document_id,
        documents=documents,
        rejected=rejected,
    )


async def _add_file(
    submission: Submission, upload: UploadFile, filename: str, fields: dict[str, str]
) -> AcceptedDocument:
    """Check one file of an upload and queue its ingestion, or raise why it is refused (a
    limit reached on the way refuses this file, not the ones already queued)."""
    state = submission.state
    caller = submission.caller
    document_id = await derived_id(state, caller, fields["source"], fields["collection"])
    job_id = new_job_id()
    try:
        content = await upload.read()
        kind = check_upload(filename, content, max_bytes=state.settings.max_document_bytes)
        await _within_storage_quota(submission, document_id, len(content))
        fields = {**fields, "document_id": document_id, "filename": filename, "format": kind}
        await enqueue_ingest(submission, job_id, content, fields)
    finally:
        await upload.close()
    return _accepted_document(submission, document_id, job_id, filename)


def _form_collection(value: object, submission: Submission) -> str:
    collection = _form_text(value) or submission.state.settings.default_collection
    try:
        DocumentIn.model_validate({"text": "", "collection": collection})
    except ValidationError:
        raise BadRequest(
            f"invalid collection name {collection!r}", code="invalid_collection"
        ) from None
    return submission.caller.collection(collection)


_ATTRIBUTES: TypeAdapter[dict[str, AttributeValue]] = TypeAdapter(Attributes)


def _form_attributes(value: object) -> dict[str, AttributeValue] | None:
    """The `attributes` form field, a JSON object; 422 saying what is wrong with it."""
    text = _form_text(value)
    if text is None:
        return None
    try:
        return _ATTRIBUTES.validate_python(orjson.loads(text))
    except orjson.JSONDecodeError as error:
        raise BadRequest(
            f"attributes: not a JSON object ({error})", code="invalid_attributes"
        ) from None
    except ValidationError as error:
        problems = "; ".join(
            ".".join(["attributes", *map(str, e["loc"])])
            + ": "
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        )
        raise BadRequest(problems, code="invalid_attributes") from None


def attribute_fields(attributes: Mapping[str, AttributeValue] | None) -> dict[str, str]:
    """An ingestion job's record fields for a document's attributes (none: it has none, and
    a new version of it drops those of the one it replaces); a vector store's file's too."""
    return record_fields(attributes=attributes) if attributes else {}


def _rejected(filename: str, error: RagError) -> RejectedFile:
    return RejectedFile(
        filename=filename, status=error.status_code, code=error.code, message=error.message
    )


def _none_accepted(errors: list[RagError]) -> RagError:
    if len(errors) == 1:
        return errors[0]
    if errors[0].code in _LIMITS and all(e.code == errors[0].code for e in errors):
        return errors[0]  # its status (and Retry-After) tell the client more than a 422
    return BadRequest(
        "no file of the upload can be ingested: " + "; ".join(e.message for e in errors),
        code="no_file_accepted",
    )


# Refusals that are about the caller's or the service's limits, not about a file.
_LIMITS = frozenset(
    {"too_many_jobs", "overloaded", "quota_exceeded", "uploads_pending", "insufficient_storage"}
)


async def _within_storage_quota(submission: Submission, document_id: str, size: int) -> None:
    await within_storage_quota(submission.state, submission.caller, size, replacing=document_id)


async def enqueue_ingest(
    submission: Submission, job_id: str, content: bytes, fields: dict[str, str]
) -> None:
    """Queue the ingestion of `content` as the document `fields["document_id"]` (also what
    a vector store's file runs, openai_compat/vector_store_files.py)."""
    # The job owns the document before it is queued (so that it finds itself the owner),
    # and gives it back if it cannot be queued.
    registry, document_id = submission.state.registry, fields["document_id"]
    # Attributes are the version's: the registry takes them when the version is indexed.
    owned = {k: v for k, v in fields.items() if v and k not in ("document_id", "attributes")}
    owned |= {"status": DocumentStatus.QUEUED, "owner": submission.caller.name, "error": ""}
    async with registry.owned_by(document_id, job_id, owned, size=len(content)):
        await enqueue(submission, job_id, "ingest", fields, upload=content)


@router.get("/documents", response_model=DocumentList)
async def list_documents(
    state: State, caller: Caller, collection: str | None = None
) -> DocumentList:
    """Every document of the caller (of `collection`, if given), most recently ingested
    first. An admin key sees everyone's."""
    records = await state.registry.all(None if caller.admin else caller.name)
    documents = [record.view() for record in records]
    if collection is not None:
        documents = [d for d in documents if d.collection == collection]
    return DocumentList(documents=documents)


@router.get(
    "/documents/{document_id}", response_model=DocumentView, responses={404: {"model": ErrorBody}}
)
async def show_document(document_id: str, state: State, caller: Caller) -> DocumentView:
    return (await _owned(state, caller, document_id)).view()


@router.delete(
    "/documents/{document_id}",
    status_code=202,
    response_model=DocumentAccepted,
    responses={404: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def delete_document(
    document_id: str, request: Request, state: State, caller: Caller
) -> DocumentAccepted:
    """Queue the removal of every chunk of the document; follow it at `events_url`. The
    deletion owns the document from now on: an ingestion of it still running cannot bring
    it back."""
    document = await _owned(state, caller, document_id)
    document_id = document.document_id
    submission = Submission(state, request, caller)
    job_id = await enqueue_deletion(submission, document_id)
    one = _accepted_document(submission, document_id, job_id, document.filename)
    return submission.accepted(DocumentAccepted, job_id, document_id=document_id, documents=[one])


async def enqueue_deletion(submission: Submission, document_id: str) -> str:
    """Queue the removal of the document's chunks; the job's id."""
    job_id = new_job_id()
    deleting = {"status": DocumentStatus.DELETING, "error": ""}
    async with submission.state.registry.owned_by(document_id, job_id, deleting):
        await enqueue(submission, job_id, "delete", {"document_id": document_id})
    return job_id


async def _owned(state: AppState, caller: Principal, document_id: str) -> DocumentRecord:
    """The caller's document `document_id` (or the one it chose by that id): another key's
    is not found, exactly like an unknown one."""
    for stored in dict.fromkeys([document_id, scoped_id(caller, document_id)]):
        document = await state.registry.get(stored)
        if document is not None and caller.may_see(document.owner):
            return document
    raise NotFound(f"no document {document_id!r}", code="document_not_found")


def _accepted_document(
    submission: Submission, document_id: str, job_id: str, filename: str | None
) -> AcceptedDocument:
    urls = submission.accepted(JobAccepted, job_id)
    return AcceptedDocument(
        document_id=document_id,
        job_id=job_id,
        filename=filename,
        status_url=urls.status_url,
        events_url=urls.events_url,
    )


def _form_text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
