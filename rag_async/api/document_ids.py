"""Which document an upload writes to, and which one a client's id names.

An id derived from a document's source (and collection) is an HMAC keyed with a secret the
service made for itself (store/server_secrets.py): the same source in the same collection of
the same key gets the same id again, so that an upload replaces it, but no other key can
compute it. A plain digest of the source could be computed by anyone, and a post of it
answered 409 or 202 as the owner held that file or not.

An id the client chose is its key's own: stored as `<key name>:<id>` (key names hold no `:`),
so another key's post of the same id neither finds nor replaces it; and the id a key was
answered with names the same document when posted again. The local user of an instance
without keys is alone, and keeps ids as given.

Documents stored before keep their ids: an upload first looks for the caller's document under
the id it would have had (a SHA-256 id, a bare chosen id), and writes to that one if the
caller owns it; only the owner can tell it is there, so it reveals nothing to another key.
"""

from __future__ import annotations

import hashlib
import hmac

from rag_async.api.state import AppState
from rag_async.domain.identity import Principal

_SECRET = "document-ids"
_SCOPE = ":"
_LENGTH = 24  # hex digits: 96 bits


async def derived_id(state: AppState, caller: Principal, source: str, collection: str) -> str:
    """The id of the caller's document from `source` in `collection` (its stored name)."""
    name = source
    if collection != state.settings.default_collection:
        name = f"{collection}\x00{source}"
    earlier = hashlib.sha256(name.encode()).hexdigest()[:_LENGTH]
    if await _owns(state, caller, earlier):
        return earlier
    secret = await state.secrets.get(_SECRET)
    return hmac.new(secret, name.encode(), hashlib.sha256).hexdigest()[:_LENGTH]


async def chosen_id(state: AppState, caller: Principal, given: str) -> str:
    """The id the caller's document `given` is stored under."""
    scoped = scoped_id(caller, given)
    if scoped != given and await _owns(state, caller, given):
        return given  # chosen before ids were scoped
    return scoped


def scoped_id(caller: Principal, given: str) -> str:
    """`given` within the caller's own ids: as it is for the local user, or if it is one
    already."""
    prefix = f"{caller.name}{_SCOPE}"
    return given if not caller.name or given.startswith(prefix) else prefix + given


async def _owns(state: AppState, caller: Principal, document_id: str) -> bool:
    document = await state.registry.get(document_id)
    return document is not None and (document.owner or "") == caller.name
