"""``aurous-async demo``: the SDK's main job, end to end, on the embedded fake server.

The fake runs with time sped up so the documented buckets (6 resynthesizes a minute,
burst 12) play out in seconds. N characters are created through the upload flow, then
all are resynthesized at once with auto-save, with a live view of the fan-out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import AurousSession, BatchProgress, InMemoryRateLimiter, ScaledClock
from ..testing import FakeAurousServer
from . import _output

SYNTHESIS_SECONDS = 45.0
_STATES = ("queued", "dispatched", "synthesizing", "reviewing", "ready", "done", "failed")


def bucket_bound(n: int) -> float:
    """API seconds the 6/min, burst-12 bucket needs for n resynthesizes, plus the last
    synthesis."""
    return max(0, n - 12) * 10.0 + SYNTHESIS_SECONDS


async def run_demo(characters: int, time_scale: float, live: bool) -> int:
    """Run the demo on a fresh embedded fake; 0 when every character ended well."""
    clock = ScaledClock(time_scale)
    fake = FakeAurousServer(clock=clock, synthesis_seconds=SYNTHESIS_SECONDS,
                            synthesis_jitter=0.2, credits=4 * characters + 100)
    async with fake, AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
        out = _output.console() if live else None
        say = out.print if out is not None else print
        say(f"Fake Aurous API on {fake.base_url} — time x{time_scale:g} "
            f"(1 API minute = {60 / time_scale:.1f} s)")
        say(f"Creating {characters} characters through the upload flow…")
        ids = []
        for i in range(characters):
            ticket = await s.characters.uploads.upload(b"\x89PNG demo", f"hero-{i}-front.png",
                                                       "image/png")
            hero = await s.characters.create(name=f"Hero {i}", upload_ids=[ticket.upload_id])
            ids.append(hero.id)
        say(f"Resynthesizing all {characters} with auto-save "
            f"(bucket: 6/min, burst 12 → bound {bucket_bound(characters):.0f} API s)…")
        states = dict.fromkeys(ids, "queued")
        latest: list[BatchProgress] = []

        def progress(p: BatchProgress) -> None:
            latest[:] = [p]
            if p.character_id is not None and p.state is not None:
                states[p.character_id] = p.state

        limiter = s.rate_limiter
        assert isinstance(limiter, InMemoryRateLimiter)
        started = clock.monotonic()
        wall = time.monotonic()
        results = []

        def view() -> Any:
            return _view(states, latest, limiter, fake, clock.monotonic() - started)

        batch = s.characters.resynthesize_many(ids, auto_save=True, progress=progress)
        if out is not None:
            from rich.live import Live

            with Live(view(), console=out, refresh_per_second=8) as display:
                async for result in batch:
                    results.append(result)
                    display.update(view())
                display.update(view())
        else:
            async for result in batch:
                results.append(result)
                done = len(results)
                if done % 5 == 0 or done == characters:
                    print(f"  {done}/{characters} finished, "
                          f"{sum(fake.rate_limited.values())} x 429", flush=True)
        makespan = clock.monotonic() - started
        # The batch's last progress report counts every GET the session sent for it.
        gets = latest[0].gets if latest else 0
        ok = sum(r.ok for r in results)
        rows = [
            ("characters done / failed", f"{ok} / {len(results) - ok}"),
            ("makespan (API seconds)", f"{makespan:.0f}"),
            ("bucket-imposed bound", f"{bucket_bound(characters):.0f}"),
            ("makespan / bound", f"{makespan / bucket_bound(characters):.3f}"),
            ("GETs per character", f"{gets / characters:.2f}"),
            ("429s from the server", str(sum(fake.rate_limited.values()))),
            ("credits charged", f"{fake.credits_spent():g}"),
            ("wall-clock seconds", f"{time.monotonic() - wall:.1f}"),
        ]
        _summary(out, rows)
        return 0 if ok == len(results) else 1


def _view(states: dict[str, str], latest: list[BatchProgress], limiter: InMemoryRateLimiter,
          fake: FakeAurousServer, elapsed: float) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = {state: 0 for state in _STATES}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    summary = Table("state", "characters", title=f"resynthesize_many — {elapsed:.0f} API s")
    for state in _STATES:
        summary.add_row(f"[{_output.style(state)}]{state}[/]", str(counts.get(state, 0)))
    tokens = limiter.tokens("characters_synthesize")
    wait = max(0.0, (1 - tokens) / (6 / 60))
    gets = latest[0].gets if latest else 0
    info = Text.from_markup(
        f"rate limit: {max(tokens, 0):.2f} tokens, next in {wait:.0f} s, "
        f"{limiter.queued('characters_synthesize')} waiting · GETs {gets} · "
        f"[{'red' if fake.rate_limited else 'green'}]429s {sum(fake.rate_limited.values())}[/]"
    )
    grid = Text()
    for n, (character_id, state) in enumerate(states.items()):
        grid.append(f" {character_id[-6:]} ", style=f"reverse {_output.style(state)}")
        grid.append("\n" if n % 6 == 5 else " ")
    return Group(summary, info, grid)


def _summary(out: Any, rows: list[tuple[str, str]]) -> None:
    if out is None:
        print("\nSummary")
        for name, value in rows:
            print(f"  {name:<26} {value}")
        return
    from rich.table import Table

    table = Table("summary", "", title="demo finished")
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def demo(characters: int, time_scale: float, live: bool) -> int:
    """:func:`run_demo` in its own event loop; returns the exit code."""
    return asyncio.run(run_demo(characters, time_scale, live))
