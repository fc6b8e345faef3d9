"""docs/operations.md and what it stands on: the alert rules (structure, PromQL that parses,
the metric names of issue 12), the KEDA replay (it follows a load step up and down without
flapping, and the doc shows what it prints), the figures quoted from benchmarks.md, and
Valkey's commands and memory per answer measured on a real API, worker and Valkey.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from redis.asyncio import Redis

from tests.conftest import Stack, ingest

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "operations.md").read_text()
ALERTS = yaml.safe_load((REPO / "deploy" / "monitoring" / "alerts.yml").read_text())
REPLAY = REPO / "deploy" / "kubernetes" / "keda_replay.py"
CLUSTER_METRICS = {
    "rag_queue_depth",
    "rag_jobs_in_flight",
    "rag_queue_oldest_age_seconds",
    "rag_dead_letters",
    "rag_workers_alive",
    "rag_jobs_total",
    "rag_breaker_open",
}

sys.path.insert(0, str(REPLAY.parent))
import keda_replay  # type: ignore[import-not-found]  # noqa: E402

sys.path.remove(str(REPLAY.parent))


def _rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in ALERTS["groups"] for rule in group["rules"]}


def test_the_alert_rules_are_well_formed() -> None:
    assert [group["name"] for group in ALERTS["groups"]] == ["rag-async"]
    for name, rule in _rules().items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        used = set(re.findall(r"\brag_[a-z_]+", rule["expr"]))
        assert used <= CLUSTER_METRICS, used - CLUSTER_METRICS
        assert "sum(" not in rule["expr"], "every API pod reports the cluster's figures: max()"
        assert f"`{name}`" in DOC, f"docs/operations.md does not explain {name}"


def test_the_alerts_worth_setting_are_there() -> None:
    """Dead letters growing, the oldest queued job's age, a breaker open, no live workers."""
    exprs = {name: rule["expr"] for name, rule in _rules().items()}
    assert "offset" in exprs["RagDeadLettersGrowing"]
    assert "rag_dead_letters" in exprs["RagDeadLettersGrowing"]
    assert 'rag_queue_oldest_age_seconds{queue="questions"}' in exprs["RagQuestionsWaitingTooLong"]
    assert "rag_breaker_open" in exprs["RagBreakerOpen"]
    assert exprs["RagNoLiveWorkers"] == "max(rag_workers_alive) == 0"


def _threshold(alert: str) -> float:
    return float(_rules()[alert]["expr"].rpartition(">")[2])


def test_the_replay_follows_a_step_without_flapping() -> None:
    seconds = keda_replay.replay(keda_replay.STEP)
    (base, _), (high, rate), _ = keda_replay.STEP
    hpa = keda_replay.Autoscaler.from_manifest()
    needed = math.ceil(rate * 8.0 / hpa.threshold)
    # Up within a minute of the step, and enough for the load until it ends.
    step_end = base + high
    assert seconds[base + 60].replicas >= needed
    assert min(s.replicas for s in seconds[base + 60 : step_end]) >= needed
    # The questions never waited long enough to fire the alert.
    assert max(s.oldest_wait for s in seconds) < _threshold("RagQuestionsWaitingTooLong")
    # After the load falls: nothing for most of the scale-down window, then back down.
    window = hpa.behavior["scaleDown"]["stabilizationWindowSeconds"]
    held = seconds[step_end : step_end + window - 60]
    assert {s.replicas for s in held} == {seconds[step_end].replicas}
    assert seconds[-1].replicas <= math.ceil(20 * 8.0 / hpa.threshold * 1.1)
    # Up, then down: one turn. Without the windows the noise makes it turn again and again.
    assert keda_replay.reversals(seconds) <= 1
    unstable = keda_replay.replay(keda_replay.STEP, stabilise=False)
    assert keda_replay.reversals(unstable) >= 5


def test_the_doc_shows_what_the_replay_prints() -> None:
    printed = subprocess.run(
        [sys.executable, str(REPLAY)], capture_output=True, text=True, check=True
    ).stdout
    shown = DOC.split("<!-- replay:begin -->\n")[1].split("<!-- replay:end -->")[0]
    assert shown == printed, "rerun deploy/kubernetes/keda_replay.py into docs/operations.md"
    unstable = subprocess.run(
        [sys.executable, str(REPLAY), "--no-stabilisation"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    turns = re.search(r"reversals of direction: (\d+)", unstable)
    assert turns and f"turns {turns.group(1)} times" in DOC


@pytest.mark.parametrize(
    ("in_benchmarks", "in_doc"),
    [
        ("| 4.6 + 8.2 + 1.8 = **14.6 ms** |", "| worker CPU per answer | 8.2 ms over the demo"),
        ("| 4.6 + 8.2 + 1.8 = **14.6 ms** |", "| 4.6 ms |"),
        ("| 4.6 + 8.2 + 1.8 = **14.6 ms** |", "| Valkey CPU per answer | 1.8 ms |"),
        ("| 4.9 + 8.9 + 1.9 = 15.7 ms |", "8.9 ms over the 530 pages"),
        ("| 110.7 |", "110.7 answers/s at C = 200"),
        ("| **1.19 / 1.46 ms** |", "Qdrant Edge's search: ~1.2 ms"),
        ("**62 KiB a stream**", "62 KiB and 5.25 ms of CPU each"),
        ("| API CPU per stream (its POST, its SSE, every event) | **5.25 ms** |", "5.25 ms"),
        ("| Redis connections of the API / of them pub/sub | 33 / 1 |", "| 33 with 1,000 streams"),
        ("**13 connections**", "(13 with 200)"),
        ("(`RAG_REDIS_MAX_CONNECTIONS`, default 32", "`RAG_REDIS_MAX_CONNECTIONS` (32)"),
        (
            "| 1 | **after, 0.1 s (its default)** | **10.8 ms** | **26.2 ms** | **0.75 %** | "
            "**0.25 %** |",
            "~0.2 % of Valkey's CPU per worker",
        ),
    ],
)
def test_the_inputs_are_the_measured_ones(in_benchmarks: str, in_doc: str) -> None:
    """What the capacity model quotes from benchmarks.md is still what benchmarks.md says."""
    assert in_benchmarks in (REPO / "docs" / "benchmarks.md").read_text()
    assert in_doc in DOC


async def _calls(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name: int(values["calls"]) for name, values in stats.items()}


async def _delta(redis: Redis, before: dict[str, int]) -> int:
    after = await _calls(redis)
    return sum(after.values()) - sum(before.values())


async def test_valkey_commands_and_memory_per_answer(stack: Stack) -> None:
    """The doc's Valkey figures, measured again: commands per answer (idle polling taken
    out) against ~80 + ~7.4 per event, and the memory an answer keeps."""
    await ingest(stack)
    redis = Redis.from_url(str(stack.settings.redis_url))
    try:
        before, started = await _calls(redis), time.monotonic()
        await asyncio.sleep(1.0)
        idle_rate = await _delta(redis, before) / (time.monotonic() - started)
        memory = (await redis.info("memory"))["used_memory"]
        before, started = await _calls(redis), time.monotonic()
        answers, events = 10, 0
        for _ in range(answers):
            accepted = await stack.client.ask("How long do I brew green tea?")
            followed = [event async for event in stack.client.follow(accepted["job_id"])]
            assert followed[-1].type == "done"
            events += len(followed)
        busy = time.monotonic() - started
        commands = (await _delta(redis, before) - idle_rate * busy) / answers
        kept = ((await redis.info("memory"))["used_memory"] - memory) / answers
    finally:
        await redis.aclose()
    model = 80 + 7.4 * events / answers
    print(f"{commands:.0f} commands, {kept:.0f} bytes an answer; {events / answers} events")
    assert 0.7 * model <= commands <= 1.3 * model, (commands, model, events / answers)
    assert 2_500 <= kept <= 11_000, kept
