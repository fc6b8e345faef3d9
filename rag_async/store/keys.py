"""Every Redis key and channel name, built from one prefix so deployments can share a server.

arq's own keys (`arq:job:<id>`, `arq:in-progress:<id>`, ...) have a fixed prefix inside arq; the
queue name is ours, and job ids are random, so two deployments still never collide. They are
named here too, so that this is the one module that knows arq's key layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "rag:"

    def job(self, job_id: str) -> str:
        """Hash: the job record (status, stage, answer, timings, ...)."""
        return f"{self.prefix}job:{job_id}"

    def events(self, job_id: str) -> str:
        """Stream: the job's event log, entry ids `0-1`, `0-2`, ... matching the event ids."""
        return f"{self.prefix}events:{job_id}"

    def live(self, job_id: str) -> str:
        """Pub/sub channel: the job's events as they happen."""
        return f"{self.prefix}live:{job_id}"

    def conversation(self, conversation_id: str) -> str:
        """Hash: a conversation's owner and creation time, and its turns ("turn:<job id>" ->
        JSON), conversations.py."""
        return f"{self.prefix}conversation:{conversation_id}"

    def answering(self, conversation_id: str) -> str:
        """Sorted set: a conversation's questions not yet ended, by the order they were asked
        (job id -> its number in the conversation), conversations.py."""
        return f"{self.prefix}answering:{conversation_id}"

    def upload(self, job_id: str) -> str:
        """String: a document's bytes waiting for its ingestion job (uploads.py)."""
        return f"{self.prefix}upload:{job_id}"

    @property
    def upload_bytes(self) -> str:
        """Integer: the bytes of every pending upload, summed (the bound on them, uploads.py)."""
        return f"{self.prefix}upload-bytes"

    @property
    def upload_sizes(self) -> str:
        """Hash: job id -> the size of its pending upload, so the sum drops by it however the
        upload goes (uploads.py)."""
        return f"{self.prefix}upload-sizes"

    @property
    def upload_expiries(self) -> str:
        """Sorted set: the job ids of pending uploads, by when they expire: one that expires
        before it is dropped leaves the sum too (uploads.py)."""
        return f"{self.prefix}upload-expiries"

    def document(self, document_id: str) -> str:
        """Hash: a document's registry entry (domain/document.py: title, status, the job that
        owns it, its current version, `v:<job id>` marks of versions with chunks, ...)."""
        return f"{self.prefix}doc:{document_id}"

    @property
    def documents(self) -> str:
        """Set: the ids of every document in the registry."""
        return f"{self.prefix}docs"

    def idempotency(self, key_digest: str) -> str:
        """String: "<job id> <request fingerprint>" for an Idempotency-Key (by its digest)."""
        return f"{self.prefix}idem:{key_digest}"

    @property
    def workers(self) -> str:
        """Hash: worker id -> its last heartbeat (JSON: last_seen, in_flight)."""
        return f"{self.prefix}workers"

    def worker_jobs(self, worker_id: str) -> str:
        """Set: the ids of the jobs a worker is running, so a survivor can free them if it dies."""
        return f"{self.prefix}worker-jobs:{worker_id}"

    @property
    def dead_letters(self) -> str:
        """Sorted set: job ids that exhausted their tries, by when they gave up."""
        return f"{self.prefix}dead-letters"

    @property
    def webhook_dead_letters(self) -> str:
        """Sorted set: ids of the jobs whose webhook failed every try, by when it gave up."""
        return f"{self.prefix}webhook-dead-letters"

    @property
    def failures(self) -> str:
        """List: the most recent failed jobs, newest first (capped)."""
        return f"{self.prefix}failures"

    @property
    def job_outcomes(self) -> str:
        """Hash: "<kind>:<outcome>" -> how many jobs of every worker ended so (metrics)."""
        return f"{self.prefix}job-outcomes"

    @property
    def ending(self) -> str:
        """Sorted set: "<job id>:<event id>" of every job end whose bookkeeping is not done
        yet, by when the job ended (Valkey's clock, ms): written with the job's last event,
        removed once its end is settled (ending.py)."""
        return f"{self.prefix}ending"

    def unfinished_jobs(self, owner: str) -> str:
        """Sorted set: the ids of an owner's queued or running jobs, by when they were created
        (the per-key cap on unfinished jobs; removed when a job ends, jobstore.py)."""
        return f"{self.prefix}unfinished:{owner}"

    def document_bytes(self, owner: str) -> str:
        """Hash: document id -> its size in bytes, for each of an owner's documents (the
        per-key storage quota; kept by the registry with every change of the entry)."""
        return f"{self.prefix}doc-bytes:{owner}"

    # OpenAI's Files and Vector Stores (/v1): their records; a file's bytes are on disk
    # (file_bytes.py), a vector store's chunks are a collection's (files.py, vector_stores.py).

    def file(self, file_id: str) -> str:
        """Hash: an uploaded file's record (owner, filename, bytes, purpose, created_at)."""
        return f"{self.prefix}file:{file_id}"

    def files(self, owner: str) -> str:
        """Sorted set: an owner's file ids, by when they were uploaded (Valkey's clock, µs)."""
        return f"{self.prefix}files:{owner}"

    def file_bytes(self, owner: str) -> str:
        """Hash: file id -> its size, for each of an owner's files (the storage quota)."""
        return f"{self.prefix}file-bytes:{owner}"

    def vector_store(self, store_id: str) -> str:
        """String: JSON of a vector store's record (owner, name, metadata, created_at)."""
        return f"{self.prefix}vs:{store_id}"

    def vector_stores(self, owner: str) -> str:
        """Sorted set: an owner's vector store ids, by when they were created (Valkey's clock,
        µs; an update keeps its place)."""
        return f"{self.prefix}vss:{owner}"

    def vector_store_files(self, store_id: str) -> str:
        """Hash: file id -> JSON of the file's attachment to the vector store (its document,
        attributes, chunking, batch)."""
        return f"{self.prefix}vs-files:{store_id}"

    def file_batch(self, batch_id: str) -> str:
        """String: JSON of a vector store's file batch (its store, file ids, cancelled)."""
        return f"{self.prefix}vs-batch:{batch_id}"

    def result_expiries(self, owner: str) -> str:
        """Sorted set: the ids of an owner's jobs by when their results (record and event log)
        expire, so that an expired one leaves the sum of their bytes (results.py)."""
        return f"{self.prefix}results:{owner}"

    def result_sizes(self, owner: str) -> str:
        """Hash: job id -> the bytes written to its result, and `total` -> their sum, for each
        of an owner's jobs (the per-key bound on stored results, results.py)."""
        return f"{self.prefix}result-bytes:{owner}"

    def secret(self, name: str) -> str:
        """String: a secret the service made for itself, once (server_secrets.py)."""
        return f"{self.prefix}secret:{name}"

    def rate(self, owner: str) -> str:
        """Hash: an owner's request token bucket (tokens, updated), quotas.py."""
        return f"{self.prefix}rate:{owner}"

    def queue(self, lane: str) -> str:
        """An arq queue (a sorted set of job ids): `questions` or `documents` (queues.py)."""
        return f"{self.prefix}queue:{lane}"

    def nudge(self, lane: str) -> str:
        """Pub/sub channel: a job was put on the lane's arq queue, for its workers to start it
        now rather than at their next poll (store/nudge.py). The queue's own name (channels and
        keys do not share a namespace), so the Lua that puts a job on a queue knows its
        channel without another argument."""
        return self.queue(lane)

    # The fair-share scheduler's keys, per lane (fair_share.py).

    def waiting_jobs(self, lane: str) -> str:
        """Hash: every job waiting in a key's list of the lane, and what handing it on needs."""
        return f"{self.prefix}waiting:{lane}"

    def waiting_ring(self, lane: str, priority: int) -> str:
        """Sorted set: the keys with jobs of a priority waiting, by their pass."""
        return f"{self.prefix}waiting-ring:{lane}:{priority}"

    def waiting_list_prefix(self, lane: str) -> str:
        """Prefix of the sorted sets `<priority>:<key>`: a key's waiting jobs, in order."""
        return f"{self.prefix}waiting-list:{lane}:"

    def fair_state(self, lane: str) -> str:
        """Hash: the scheduler's passes, credit and arrival count."""
        return f"{self.prefix}fair:{lane}"

    def running_prefix(self, lane: str) -> str:
        """Prefix of the sorted sets `<key>`: a key's jobs handed on and not ended, kept while
        a per-key running cap applies."""
        return f"{self.prefix}fair-running:{lane}:"

    # arq's keys, fixed by arq.

    def arq_job(self, job_id: str) -> str:
        """String: arq's copy of a queued job's function and arguments."""
        return job_key_prefix + job_id

    def arq_result(self, job_id: str) -> str:
        """String: arq's result of a job (none kept here: keep_result is 0), which arq's
        enqueue checks for, as queue.py's does."""
        return result_key_prefix + job_id

    def arq_in_progress(self, job_id: str) -> str:
        """String: set while a worker runs the job; no other worker may start it meanwhile."""
        return in_progress_key_prefix + job_id

    def arq_tries(self, job_id: str) -> str:
        """Integer: how many times arq has started the job."""
        return retry_key_prefix + job_id

    @property
    def arq_aborts(self) -> str:
        """Sorted set: ids of running jobs that workers should cancel (arq's allow_abort_jobs)."""
        return abort_jobs_ss
