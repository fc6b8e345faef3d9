"""The layout's rules, checked: the store alone speaks to Valkey, and code stays small."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRODUCT = [*sorted((REPO / "rag_async").rglob("*.py")), *sorted((REPO / "workers").rglob("*.py"))]
STORE = REPO / "rag_async" / "store"


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in PRODUCT:
        yield path.relative_to(REPO), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_only_the_store_imports_redis() -> None:
    outside = [
        f"{path}: {name}"
        for path, tree in _modules()
        if not (REPO / path).is_relative_to(STORE)
        for name in _imports(tree)
        if name == "redis" or name.startswith("redis.") or name == "arq.connections"
    ]
    assert outside == []


def test_lua_lives_in_the_store() -> None:
    outside = [
        str(path)
        for path, _ in _modules()
        if not (REPO / path).is_relative_to(STORE) and "redis.call(" in (REPO / path).read_text()
    ]
    assert outside == []


@pytest.mark.parametrize("limit", [50])
def test_no_function_is_long(limit: int) -> None:
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]
    assert long == []


def test_no_module_is_long() -> None:
    long = [
        f"{path}" for path, _ in _modules() if len((REPO / path).read_text().splitlines()) > 600
    ]
    assert long == []


def test_a_kind_has_one_name_and_jobs_queued_under_the_earlier_names_still_run() -> None:
    from rag_async.config import Settings
    from rag_async.domain.job import JobRecord
    from rag_async.store.queue import EARLIER_NAMES, JOB_KINDS
    from rag_async.worker.jobs import JOBS
    from rag_async.worker.kinds import KIND_POLICIES
    from rag_async.worker.process import lane_functions

    assert set(JOBS) == set(KIND_POLICIES) == set(JOB_KINDS) >= set(EARLIER_NAMES)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    names = {f.name for lane in ("questions", "documents") for f in lane_functions(settings, lane)}
    assert set(JOB_KINDS) <= names and set(EARLIER_NAMES.values()) <= names
    assert JobRecord.from_hash("j", {b"kind": b"chat"}).kind == "answer"
