"""Webhooks: what pushes save a fan-out, and what verifying a delivery costs.

    python benchmarks/bench_webhooks.py [--quick] [--characters 200] [--scale 500]

1. A fan-out of n characters at time ×500 (auto_save) whose fake server delivers signed
   ``character.completed`` events to a receiver on loopback: once with the receiver
   feeding the session (``WebhookReceiver(session=s)``, webhooks on), once without
   (polling alone). GETs per character are counted by the server; the delay from a
   synthesis' end (its delivery's time) to the watcher's ``reviewing`` update is in API
   seconds.
2. ``aa.webhooks.verify`` per event, beside a plain ``hmac`` digest and compare of the
   same text (medians of interleaved rounds).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import statistics
import time
from typing import Any

from _common import header, parser, prose, record, table
from aiohttp import web

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, ScaledClock

GET_CHARACTER = "GET /v1/characters/{character_id}"


async def fan_out(n: int, scale: float, feed: bool) -> dict[str, Any]:
    clock = ScaledClock(scale)
    async with FakeAurousServer(clock=clock, synthesis_seconds=45.0, synthesis_jitter=0.2,
                                credits=10 * n) as fake, \
            aa.AurousSession(fake.api_key, base_url=fake.base_url, clock=clock) as s:
        ids = [fake.add_character() for _ in range(n)]
        holder: dict[str, aa.webhooks.WebhookReceiver] = {}

        async def handle(request: web.Request) -> web.StreamResponse:
            return await holder["receiver"].handle(request)

        app = web.Application()
        app.router.add_post("/hooks", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            endpoint = await s.webhook_endpoints.create(
                f"http://127.0.0.1:{port}/hooks", events=["character.completed"])
            assert endpoint.secret is not None
            holder["receiver"] = aa.webhooks.WebhookReceiver(
                endpoint.secret, session=s if feed else None, clock=clock)
            seen: dict[str, float] = {}

            def progress(p: aa.BatchProgress) -> None:
                if p.state == "reviewing" and p.character_id is not None:
                    seen.setdefault(p.character_id, clock.time())

            async for _ in s.characters.resynthesize_many(ids, auto_save=True,
                                                          progress=progress):
                pass
            await holder["receiver"].aclose()
        finally:
            await runner.cleanup()
        delivered = {json.loads(d.body)["data"]["id"]: d.delivered_at
                     for d in fake.webhook_deliveries if d.attempt == 1}
        delays = [seen[cid] - delivered[cid] for cid in ids if cid in seen and cid in delivered]
        return {"gets": len(fake.requests_to(GET_CHARACTER)) / n,
                "delay_median": statistics.median(delays),
                "delay_p95": statistics.quantiles(delays, n=20)[-1],
                "429s": sum(fake.rate_limited.values())}


def verify_cost(rounds: int) -> tuple[float, float]:
    """µs per verify and per plain hmac of a ~300-byte character event."""
    secret = "whsec_" + "5f" * 16
    body = json.dumps({
        "id": "evt_01HXMQ7Z3K8Y2NABCDEFGHJKMR", "object": "event", "type": "character.completed",
        "created_at": "2026-05-08T10:00:00Z", "synthetic": False,
        "data": {"id": "char_01HXMQ7Z3K8Y2NABCDEFGHJKMR", "object": "character",
                 "status": "reviewing", "name": "Aurora"}}).encode()
    t = 1_800_000_000
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    header_value, key = f"t={t},v1={digest}", secret.encode()

    def plain() -> None:
        hmac.compare_digest(hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest(),
                            digest)

    def full() -> None:
        aa.webhooks.verify(body, header_value, secret, now=t)

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        return (time.perf_counter() - start) / rounds * 1e6

    plains, verifies = [], []
    for _ in range(5):
        plains.append(timed(plain))
        verifies.append(timed(full))
    return statistics.median(verifies), statistics.median(plains)


async def main() -> None:
    p = parser(__doc__)
    p.add_argument("--characters", type=int, default=200)
    p.add_argument("--scale", type=float, default=500.0)
    args = p.parse_args()
    n = 40 if args.quick else args.characters
    header("Webhooks: GETs and delay with pushes, and the cost of verify")
    prose(f"""A fan-out of {n:,} characters at ×{args.scale:g} (documented buckets, 45 s
        ± 20 % syntheses, auto_save, PollPolicy defaults: 2 s growing to 15 s, learned
        first polls). The fake delivers a signed `character.completed` to a receiver on
        loopback when each synthesis ends; with webhooks on, the receiver feeds the
        session. The delay is from that delivery to the watcher's `reviewing` update, in
        API seconds. `verify` is timed beside a plain HMAC-SHA256 digest and compare of
        the same text (medians of 5 interleaved rounds).""")
    off = await fan_out(n, args.scale, feed=False)
    on = await fan_out(n, args.scale, feed=True)
    verify_us, hmac_us = verify_cost(2_000 if args.quick else 20_000)
    table([("", "webhooks off (polling)", "webhooks on", "goal"),
           ("GETs per character", f"{off['gets']:.2f}", f"{on['gets']:.2f}", "≤ 1.1 (on)"),
           ("synthesis end → watcher update, median (API s)", f"{off['delay_median']:.1f}",
            f"{on['delay_median']:.1f}", "< one poll interval"),
           ("synthesis end → watcher update, p95 (API s)", f"{off['delay_p95']:.1f}",
            f"{on['delay_p95']:.1f}", ""),
           ("429s", str(off["429s"]), str(on["429s"]), "0")])
    table([("", "µs per event"), ("aa.webhooks.verify", f"{verify_us:.1f}"),
           ("plain hmac digest + compare", f"{hmac_us:.1f}")])
    record(args.figures, "webhooks_gets_per_character_on", on["gets"])
    record(args.figures, "webhooks_delay_median_on", on["delay_median"])
    record(args.figures, "verify_us", verify_us)


if __name__ == "__main__":
    asyncio.run(main())
