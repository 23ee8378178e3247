"""``RedisJournal``: a durable-batch journal in Redis, for fleets of workers (design §4).

Per batch, three keys share one hash tag (so Redis Cluster keeps them in one slot)::

    {prefix}:{<batch>}:lease     the lease holder's token, expiring after lease_ttl
    {prefix}:{<batch>}:records   hash: character id -> the record as compact JSON
    {prefix}:{<batch>}:order     list of the character ids in the order added

and ``{prefix}:batches`` is the set of batch names. Writes are Lua scripts that check the
lease and write in one atomic step, so a runner whose lease was taken over can never
overwrite its successor's records. Lease expiry follows Redis's own clock, so machines
with skewed clocks agree on it.

A write is as durable as the Redis server makes it: for a journal that survives a Redis
restart, run Redis with ``appendonly yes`` (``appendfsync everysec`` or ``always``).

Requires the ``redis`` extra (``pip install 'aurous-async[redis]'``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._clock import Clock
from ._journal import BatchInUseError, JournalError, JournalRecord, JournalState, LeaseLostError
from ._journal_batch import StoredJournal

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RedisJournal"]

# The lease check every fenced script starts with. KEYS[1] = lease, ARGV[1] = owner,
# ARGV[2] = ttl in ms. A lease that lapsed without anyone taking it over is still ours
# (as in the SQLite journal): only another runner's token refuses the write.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""

# Returns {1, 0} when acquired, {0, ms left} when another runner holds the batch.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, 0}
"""

_RENEW = _HOLD + "return 1"

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS[2] = records, KEYS[3] = order; ARGV[3…] = id, json, id, json, …
_ADD = _HOLD + """
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('RPUSH', KEYS[3], ARGV[i])
end
return 1
"""

# KEYS[2] = records; ARGV[3] = id, ARGV[4] = json.
_PUT = _HOLD + """
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

#: New ids per script call: bounds one script's run time (Redis blocks while it runs).
_ADD_CHUNK = 1000

# Short field names keep a pending record at ~20 bytes (10,000-id batches are common).
_FIELDS = (("idempotency_key", "k"), ("sent_at", "t"), ("request_id", "r"), ("status", "st"),
           ("character", "c"), ("error_class", "ec"), ("error_code", "eo"),
           ("error_message", "em"))


class RedisJournal(StoredJournal):
    """A journal kept in Redis under ``prefix``, shared by every worker of a fleet.

    ::

        journal = aurous_async.RedisJournal.from_url("redis://localhost:6379/0")
        async with journal:
            async for r in s.characters.resynthesize_many(ids, journal=journal,
                                                          batch="spring-refresh"):
                ...

    ``client`` is a ``redis.asyncio.Redis``; a client you pass is yours to close, one
    made by :meth:`from_url` is closed by :meth:`aclose`. ``lease_ttl`` is how long a
    batch stays locked to a runner that stopped renewing (it renews every third of
    that). Redis errors surface as :class:`JournalError`.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "aurous:journal",
                 lease_ttl: float = 30.0, clock: Clock | None = None) -> None:
        super().__init__(lease_ttl=lease_ttl, clock=clock)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        self.client = client
        self.prefix = prefix
        self._owns_client = False
        self._acquire_script = client.register_script(_ACQUIRE)
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._add_script = client.register_script(_ADD)
        self._put_script = client.register_script(_PUT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "aurous:journal", lease_ttl: float = 30.0,
                 clock: Clock | None = None) -> RedisJournal:
        """A journal on a new ``redis.asyncio`` client for ``url`` (closed by :meth:`aclose`)."""
        try:
            import redis.asyncio as aioredis
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(
                "RedisJournal needs the redis extra: pip install 'aurous-async[redis]'"
            ) from None
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        journal = cls(client, prefix=prefix, lease_ttl=lease_ttl, clock=clock)
        journal._owns_client = True
        return journal

    def __repr__(self) -> str:
        return f"RedisJournal({self._where()}, prefix={self.prefix!r})"

    def _where(self) -> str:
        # Built from the connection settings, never from the URL: it may hold a password.
        pool = getattr(self.client, "connection_pool", None)
        settings = getattr(pool, "connection_kwargs", {})
        if "path" in settings:
            return f"unix://{settings['path']}"
        host, port, db = settings.get("host"), settings.get("port"), settings.get("db", 0)
        return f"redis://{host}:{port}/{db}" if host else "Redis"

    def _keys(self, batch: str) -> list[str]:
        base = f"{self.prefix}:{{{batch}}}"
        return [f"{base}:lease", f"{base}:records", f"{base}:order"]

    def _ttl_ms(self, ttl: float) -> int:
        return max(1, round(ttl * 1000))

    async def _redis(self, call: Any) -> Any:
        """Await one Redis call, turning its failures into :class:`JournalError`."""
        from redis.exceptions import RedisError

        try:
            return await call
        except (RedisError, OSError) as exc:
            raise JournalError(
                f"the Redis journal at {self._where()} is unavailable: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # Storage primitives --------------------------------------------------------------

    async def _acquire(self, batch: str, owner: str, now: float, ttl: float) -> None:
        keys = self._keys(batch)
        won, left_ms = await self._redis(
            self._acquire_script(keys=keys[:1], args=[owner, self._ttl_ms(ttl)]))
        if not int(won):
            raise BatchInUseError(batch, max(0, int(left_ms)) / 1000)
        await self._redis(self.client.sadd(f"{self.prefix}:batches", batch))

    async def _renew(self, batch: str, owner: str, now: float, ttl: float) -> bool:
        held = await self._redis(
            self._renew_script(keys=self._keys(batch)[:1], args=[owner, self._ttl_ms(ttl)]))
        return bool(int(held))

    async def _release(self, batch: str, owner: str) -> None:
        await self._redis(self._release_script(keys=self._keys(batch)[:1], args=[owner]))

    async def _load(self, batch: str, *, create: bool = True) -> list[JournalRecord]:
        _, records_key, order_key = self._keys(batch)
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot
        pipe.lrange(order_key, 0, -1)
        pipe.hgetall(records_key)
        order, raw = await self._redis(pipe.execute())
        by_id = {_str(key): value for key, value in raw.items()}
        return [self._decode(_str(cid), by_id.get(_str(cid))) for cid in order]

    def _decode(self, character_id: str, raw: Any) -> JournalRecord:
        try:
            data = json.loads(raw)
            fields = {name: data.get(short) for name, short in _FIELDS}
            return JournalRecord(character_id=character_id, state=JournalState(data["s"]),
                                 charged=bool(data.get("ch")), final=bool(data.get("f")),
                                 updated_at=float(data["u"]), **fields)
        except (TypeError, ValueError, KeyError) as exc:
            raise JournalError(f"the Redis journal at {self._where()} holds a corrupt record "
                               f"for {character_id!r}") from exc

    async def _add(self, batch: str, owner: str, records: Sequence[JournalRecord]) -> None:
        keys = self._keys(batch)
        for first in range(0, len(records), _ADD_CHUNK):
            args: list[Any] = [owner, self._ttl_ms(self.lease_ttl)]
            for record in records[first:first + _ADD_CHUNK]:
                args += [record.character_id, _encode(record)]
            if not int(await self._redis(self._add_script(keys=keys, args=args))):
                raise LeaseLostError(f"batch {batch!r} was taken over by another runner")

    async def _put(self, batch: str, owner: str, record: JournalRecord) -> None:
        args: list[Any] = [owner, self._ttl_ms(self.lease_ttl), record.character_id,
                           _encode(record)]
        if not int(await self._redis(self._put_script(keys=self._keys(batch)[:2], args=args))):
            raise LeaseLostError(f"batch {batch!r} was taken over by another runner")

    async def _batch_names(self) -> list[str]:
        return [_str(name) for name in
                await self._redis(self.client.smembers(f"{self.prefix}:batches"))]

    async def _close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _encode(record: JournalRecord) -> str:
    data: dict[str, Any] = {"s": record.state.value, "u": record.updated_at}
    for name, short in _FIELDS:
        value = getattr(record, name)
        if value is not None:
            data[short] = value
    if record.charged:
        data["ch"] = 1
    if record.final:
        data["f"] = 1
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _str(value: str | bytes) -> str:
    # A client made with decode_responses=True answers str, the default bytes.
    return value.decode() if isinstance(value, bytes) else value
