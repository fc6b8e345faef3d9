"""When the answer's first text leaves the worker's pipeline (the screen of llm/safety.py and
the token coalescing of worker/jobs/answer.py), in process, for a few ways an answer opens.

A stand-in LLM sends 40 tokens at 100 a second. The first text's time is counted from its
first token, median of `RUNS` answers, with the flush interval of the settings (50 ms) and
with none; so is the longest wait for text (the first, or the next batch). "coalescing
alone" is the pipeline without the screen (the inline design's). Also the screen's CPU per
40-token answer, screened per token and per batch of five.

    python benchmarks/first_token.py

Run on an earlier commit with this file copied into its checkout to compare: it measures the
pipeline of the checkout it runs in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from harness import median

from rag_async.providers.llm.safety import screen
from rag_async.worker.jobs import answer

RUNS = 20
TOKENS = 40
GAP = 0.01  # 100 tokens a second
OPENINGS = {
    "Based on [1], ... (the test LLM's)": ["Based", " on", " [1],"],
    "The kettle boils ...": ["The", " kettle", " boils"],
    "The answer is ...": ["The", " answer", " is"],
    "Yes, see [1]: the ... (no newline)": ["Yes", ",", " see", " [1]", ":", " the"],
}

Pipeline = Callable[[AsyncIterator[str], float], AsyncIterator[str]]


def _checkout_pipeline(pieces: AsyncIterator[str], interval: float) -> AsyncIterator[str]:
    batches = getattr(answer, "screened_batches", None)
    if batches is not None:
        return batches(pieces, [], interval)  # type: ignore[no-any-return]
    return screen(answer.coalesce(pieces, interval), [])  # the order before screened_batches


def _coalescing_alone(pieces: AsyncIterator[str], interval: float) -> AsyncIterator[str]:
    return answer.coalesce(pieces, interval)


def _tokens(opening: Sequence[str]) -> list[str]:
    return [*opening, *(f" word{i}" for i in range(len(opening), TOKENS))]


async def _llm(tokens: Sequence[str]) -> AsyncIterator[str]:
    for i, token in enumerate(tokens):
        if i:
            await asyncio.sleep(GAP)
        yield token


async def timings_ms(
    pipeline: Pipeline, tokens: Sequence[str], interval: float
) -> tuple[float, float]:
    """When the first text came out, and the longest wait for the next (or the first), in
    milliseconds from the LLM's first token."""
    started = last = time.monotonic()
    first, longest = float("nan"), 0.0
    async for text in pipeline(_llm(tokens), interval):
        if text:
            now = time.monotonic()
            first = now - started if first != first else first  # nan until the first text
            longest, last = max(longest, now - last), now
    return first * 1000, longest * 1000


def screen_cpu_us(tokens: Sequence[str], per: int) -> float:
    """The screen's CPU microseconds per answer, fed `per` tokens at a time."""
    pieces = ["".join(tokens[i : i + per]) for i in range(0, len(tokens), per)]

    async def one() -> None:
        async def source() -> AsyncIterator[str]:
            for piece in pieces:
                yield piece

        async for _ in screen(source(), []):
            pass

    n = 2000
    started = time.process_time()
    for _ in range(n):
        _drive(one())
    return (time.process_time() - started) / n * 1e6


def _drive(coroutine: object) -> None:
    """Run a coroutine that never waits (no event loop needed, none timed)."""
    try:
        coroutine.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return
    raise RuntimeError("the coroutine waited")


async def main() -> None:
    designs: dict[str, Pipeline] = {
        "screen + coalescing (this checkout)": _checkout_pipeline,
        "coalescing alone": _coalescing_alone,
    }
    for interval in (0.05, 0.0):
        print(
            f"interval {interval * 1000:g} ms: the first text, and the longest wait for text, "
            "ms after the LLM's first token, medians"
        )
        print(f"  {'':<40}" + "".join(f"{name:>40}" for name in designs))
        for name, opening in OPENINGS.items():
            tokens = _tokens(opening)
            row = []
            for design in designs.values():
                runs = [await timings_ms(design, tokens, interval) for _ in range(RUNS)]
                first, longest = (median([run[i] for run in runs]) for i in (0, 1))
                row.append(f"{first:7.1f} / {longest:7.1f}")
            print(f"  {name:<40}" + "".join(f"{cell:>40}" for cell in row))
    tokens = _tokens(OPENINGS["Based on [1], ... (the test LLM's)"])
    print("screen CPU per 40-token answer, us")
    print(f"  per token            {screen_cpu_us(tokens, 1):7.1f}")
    print(f"  per batch of five    {screen_cpu_us(tokens, 5):7.1f}")


if __name__ == "__main__":
    asyncio.run(main())
