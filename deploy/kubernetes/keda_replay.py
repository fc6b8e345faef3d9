"""Replays a load step through the KEDA ScaledObject of base/keda-scaledobject.yaml: the
question queue a second at a time, and the replica count the HPA would set from KEDA's
metric (ready + in flight) with the object's own threshold, bounds, polling interval,
stabilisation windows and rate policies.

    python deploy/kubernetes/keda_replay.py                       # the step, as a table
    python deploy/kubernetes/keda_replay.py --no-stabilisation    # the same without windows

The model: questions arrive as a Poisson process (seeded), each takes --answer-seconds in a
worker slot, a worker has RAG_WORKER_MAX_JOBS slots, a new pod takes --pod-start seconds to
take jobs, and a pod scaled away drains its jobs (they finish; none is lost). The HPA part
follows Kubernetes' algorithm: desired = ceil(metric / threshold) outside a 10 % tolerance,
scale-up takes the lowest and scale-down the highest recommendation of its window, then the
rate policies (selectPolicy Max) bound the change per period.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SCALED_OBJECT = HERE / "base" / "keda-scaledobject.yaml"
CONFIG = HERE / "base" / "config.env"
TOLERANCE = 0.1  # the HPA's default: no change within 10 % of the target


@dataclass
class Autoscaler:
    """The HPA as KEDA configures it, for the questions trigger."""

    threshold: float
    min_replicas: int
    max_replicas: int
    polling: int
    behavior: dict[str, Any]
    history: deque[tuple[int, int]] = field(default_factory=deque)  # (time, recommendation)
    changes: list[tuple[int, int]] = field(default_factory=list)  # (time, replicas before)

    @classmethod
    def from_manifest(cls, path: Path = SCALED_OBJECT, stabilise: bool = True) -> Autoscaler:
        spec = yaml.safe_load(path.read_text())["spec"]
        trigger = next(t for t in spec["triggers"] if t["name"] == "questions")
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        if not stabilise:
            behavior = {
                d: {**rules, "stabilizationWindowSeconds": 0} for d, rules in behavior.items()
            }
        return cls(
            threshold=float(trigger["metadata"]["threshold"]),
            min_replicas=spec["minReplicaCount"],
            max_replicas=spec["maxReplicaCount"],
            polling=spec["pollingInterval"],
            behavior=behavior,
        )

    def decide(self, now: int, current: int, metric: float) -> int:
        ratio = metric / (current * self.threshold)
        wanted = current if abs(ratio - 1) <= TOLERANCE else math.ceil(metric / self.threshold)
        wanted = min(max(wanted, self.min_replicas), self.max_replicas)
        self.history.append((now, wanted))
        longest = max(rules["stabilizationWindowSeconds"] for rules in self.behavior.values())
        while self.history and self.history[0][0] < now - longest:
            self.history.popleft()
        if wanted > current:
            window = self._window("scaleUp", now)
            target = min(max(current, min(window)), self._limit("scaleUp", now, current))
        else:
            window = self._window("scaleDown", now)
            target = max(min(current, max(window)), self._limit("scaleDown", now, current))
        if target != current:
            self.changes.append((now, current))
        return target

    def _window(self, direction: str, now: int) -> list[int]:
        seconds = self.behavior[direction]["stabilizationWindowSeconds"]
        return [r for t, r in self.history if t >= now - seconds]

    def _limit(self, direction: str, now: int, current: int) -> int:
        """The furthest the policies let the count move from where it was a period ago."""
        rules = self.behavior[direction]
        limits = []
        for policy in rules["policies"]:
            period = policy["periodSeconds"]
            start = next((before for t, before in self.changes if t > now - period), current)
            if policy["type"] == "Pods":
                step = policy["value"]
            else:
                step = math.ceil(start * policy["value"] / 100)
            limits.append(start + step if direction == "scaleUp" else start - step)
        pick = (
            max if (rules.get("selectPolicy", "Max") == "Max") == (direction == "scaleUp") else min
        )
        return int(pick(limits))


@dataclass
class Second:
    time: int
    rate: float
    ready: int
    in_flight: int
    replicas: int
    oldest_wait: int


def replay(
    phases: list[tuple[int, float]],
    *,
    answer_seconds: float = 8.0,
    pod_start: int = 20,
    stabilise: bool = True,
    seed: int = 12,
) -> list[Second]:
    """Seconds of load: `phases` are (duration in seconds, questions a second)."""
    config = dict(
        line.split("=", 1) for line in CONFIG.read_text().splitlines() if line[:1].isalpha()
    )
    slots_per_worker = int(config["RAG_WORKER_MAX_JOBS"])
    hpa = Autoscaler.from_manifest(stabilise=stabilise)
    rng = random.Random(seed)
    queue: deque[int] = deque()  # arrival time of each waiting question
    # From the first phase's steady state: its questions in flight, the replicas they need.
    first = phases[0][1] * answer_seconds
    running = [answer_seconds * i / first for i in range(round(first))]  # end times
    replicas = min(max(math.ceil(first / hpa.threshold), hpa.min_replicas), hpa.max_replicas)
    starting: deque[tuple[int, int]] = deque()  # (ready at, replicas then)
    serving = replicas
    seconds: list[Second] = []
    now = 0
    for duration, rate in phases:
        for _ in range(duration):
            queue.extend([now] * _poisson(rng, rate))
            running = [end for end in running if end > now]
            while starting and starting[0][0] <= now:
                serving = max(serving, starting.popleft()[1])
            serving = min(serving, replicas)  # scaled away: drains, takes nothing new
            while queue and len(running) < serving * slots_per_worker:
                queue.popleft()
                running.append(now + answer_seconds)
            if now % hpa.polling == 0:
                metric = len(queue) + len(running)
                decided = hpa.decide(now, replicas, metric)
                if decided > replicas:
                    starting.append((now + pod_start, decided))
                replicas = decided
            wait = now - queue[0] if queue else 0
            seconds.append(Second(now, rate, len(queue), len(running), replicas, wait))
            now += 1
    return seconds


def _poisson(rng: random.Random, rate: float) -> int:
    """Arrivals in one second (Knuth's method, fine for the rates used here)."""
    if rate <= 0:
        return 0
    if rate > 50:  # the normal approximation, to stay quick
        return max(0, round(rng.gauss(rate, math.sqrt(rate))))
    limit, k, p = math.exp(-rate), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def reversals(seconds: list[Second]) -> int:
    """How often the replica count turned from rising to falling or back: flapping."""
    steps = [b.replicas - a.replicas for a, b in itertools.pairwise(seconds)]
    signs = [1 if s > 0 else -1 for s in steps if s]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


STEP = [(300, 20.0), (900, 60.0), (1200, 20.0)]  # questions a second: base, step, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answer-seconds", type=float, default=8.0)
    parser.add_argument("--pod-start", type=int, default=20)
    parser.add_argument("--no-stabilisation", action="store_true")
    parser.add_argument(
        "--every", type=int, default=150, help="a row every N seconds, and at every change"
    )
    args = parser.parse_args()
    seconds = replay(
        STEP,
        answer_seconds=args.answer_seconds,
        pod_start=args.pod_start,
        stabilise=not args.no_stabilisation,
    )
    print("| t (s) | questions/s | ready | in flight | replicas | oldest wait (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    shown = [
        s
        for before, s in zip([None, *seconds], seconds, strict=False)
        if s.time % args.every == 0 or (before and before.replicas != s.replicas)
    ]
    for s in shown:
        row = (s.time, f"{s.rate:g}", s.ready, s.in_flight, s.replicas, s.oldest_wait)
        print("| " + " | ".join(map(str, row)) + " |")
    print(f"\nreversals of direction: {reversals(seconds)}; ", end="")
    print(f"peak replicas {max(s.replicas for s in seconds)}; ", end="")
    print(f"longest wait {max(s.oldest_wait for s in seconds)} s")


if __name__ == "__main__":
    main()
