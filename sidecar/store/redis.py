"""Redis timeline store for clusters across hosts: same interface, same compare-and-set.

Keys live under ``sidecar:v1:`` (the schema version is part of the prefix). First-writer
semantics come from ``HSETNX`` inside Lua scripts, so a write and its index updates are
atomic. Holder sets expire after a day; each stream keeps its newest ``KEEP`` records.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sidecar.errors import StoreError
from sidecar.model import Epoch, SegmentRecord
from sidecar.store.base import (
    NodeInfo,
    epoch_from_dict,
    epoch_to_dict,
    record_from_dict,
    record_to_dict,
)

PREFIX = "sidecar:v1:"
KEEP = 20_000
HOLDER_TTL = 86_400

_PUT_SEGMENT = """
-- KEYS: seg hash, nums zset, epoch_first hash ; ARGV: number, json, epoch, keep
local created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if created == 1 then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  local first = redis.call('HGET', KEYS[3], ARGV[3])
  if (not first) or tonumber(ARGV[1]) < tonumber(first) then
    redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
  end
  local n = redis.call('ZCARD', KEYS[2])
  local keep = tonumber(ARGV[4])
  if n > keep then
    local old = redis.call('ZRANGE', KEYS[2], 0, n - keep - 1)
    for _, num in ipairs(old) do redis.call('HDEL', KEYS[1], num) end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - keep - 1)
  end
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""

_ADD_HOLDER = """
-- KEYS: holders set, newest hash ; ARGV: node, number, ttl
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if (not cur) or tonumber(ARGV[2]) > tonumber(cur) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 1
"""


def _k(stream: str, what: str) -> str:
    return f"{PREFIX}s:{stream}:{what}"


class RedisStore:
    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self.url = url
        try:
            self.r = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), decode_responses=True)
        except ValueError as exc:
            raise StoreError(f"bad Redis URL {url!r}: {exc}") from exc
        self._put = self.r.register_script(_PUT_SEGMENT)
        self._hold = self.r.register_script(_ADD_HOLDER)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise StoreError(f"Redis {self.url}: {exc}") from exc

    def ping(self) -> None:
        self._call(self.r.ping)

    def time(self) -> int:
        """The Redis server's clock in ticks: the cluster's reference time."""
        seconds, micros = self._call(self.r.time)
        return int(seconds) * 90_000 + int(micros) * 9 // 100

    # -- epochs ----------------------------------------------------------------------

    def latest_epoch(self, stream: str) -> Epoch | None:
        keys = self._call(self.r.hkeys, _k(stream, "epochs"))
        if not keys:
            return None
        raw = self._call(self.r.hget, _k(stream, "epochs"), str(max(int(k) for k in keys)))
        return epoch_from_dict(json.loads(raw)) if raw else None

    def create_epoch(self, epoch: Epoch) -> Epoch:
        key = _k(epoch.stream, "epochs")
        self._call(self.r.hsetnx, key, str(epoch.index), json.dumps(epoch_to_dict(epoch)))
        raw = self._call(self.r.hget, key, str(epoch.index))
        return epoch_from_dict(json.loads(raw))

    def epochs(self, stream: str) -> list[Epoch]:
        values = self._call(self.r.hvals, _k(stream, "epochs"))
        return sorted((epoch_from_dict(json.loads(v)) for v in values), key=lambda e: e.index)

    # -- segments --------------------------------------------------------------------

    def put_segment(self, record: SegmentRecord) -> SegmentRecord:
        raw = self._call(self._put, [_k(record.stream, "seg"), _k(record.stream, "nums"),
                                     _k(record.stream, "epoch_first")],
                         [record.number, json.dumps(record_to_dict(record)), record.epoch, KEEP])
        return record_from_dict(json.loads(raw))

    def _records(self, stream: str, numbers: list[str]) -> list[SegmentRecord]:
        if not numbers:
            return []
        values = self._call(self.r.hmget, _k(stream, "seg"), numbers)
        return [record_from_dict(json.loads(v)) for v in values if v]

    def segments(self, stream: str, since: int) -> list[SegmentRecord]:
        nums = self._call(self.r.zrangebyscore, _k(stream, "nums"), since, "+inf", 0, 1000)
        return self._records(stream, nums)

    def recent(self, stream: str, limit: int) -> list[SegmentRecord]:
        nums = self._call(self.r.zrevrange, _k(stream, "nums"), 0, limit - 1)
        return self._records(stream, list(reversed(nums)))

    def last_number(self, stream: str) -> int | None:
        nums = self._call(self.r.zrevrange, _k(stream, "nums"), 0, 0)
        return int(nums[0]) if nums else None

    def epoch_first_numbers(self, stream: str) -> dict[int, int]:
        raw = self._call(self.r.hgetall, _k(stream, "epoch_first"))
        return {int(k): int(v) for k, v in raw.items()}

    # -- holders and nodes -------------------------------------------------------------

    def add_holder(self, stream: str, number: int, node: str) -> None:
        self._call(self._hold, [_k(stream, f"h:{number}"), _k(stream, "newest")],
                   [node, number, HOLDER_TTL])

    def holders(self, stream: str, number: int) -> list[str]:
        return sorted(self._call(self.r.smembers, _k(stream, f"h:{number}")))

    def newest_by_node(self, stream: str) -> dict[str, int]:
        raw = self._call(self.r.hgetall, _k(stream, "newest"))
        return {k: int(v) for k, v in raw.items()}

    def heartbeat(self, node: str, url: str, now: int) -> None:
        self._call(self.r.hset, f"{PREFIX}nodes", node,
                   json.dumps({"url": url, "heartbeat": now}))

    def nodes(self) -> list[NodeInfo]:
        raw = self._call(self.r.hgetall, f"{PREFIX}nodes")
        out = []
        for node, value in sorted(raw.items()):
            v = json.loads(value)
            out.append(NodeInfo(node, v["url"], v["heartbeat"]))
        return out

    def close(self) -> None:
        self.r.close()
