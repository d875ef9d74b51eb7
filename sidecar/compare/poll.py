"""The run: poll every origin at the same instants, download shared segments, record all.

Every request goes through one token bucket (``max_rps``) and segment bytes through a
bandwidth budget (``max_kbps``), so a run is gentle on production origins. A poll takes its
tokens for all origins at once and sends the requests together. Poll instants are random,
``polls_per_target`` per target duration on average (never faster than the budget allows).
Each segment name (and each init segment) is downloaded once from every origin; names that
queue up beyond ``backlog`` are skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from sidecar.compare.analyze import Comparison, check_segment
from sidecar.compare.media import first_timestamps
from sidecar.compare.model import (
    KIND_NAMES,
    VARIANTS_DIFFER,
    CompareError,
    Event,
    Fetched,
    Listing,
    Multivariant,
)
from sidecar.compare.parse import classify, parse_hls, parse_mpd, strip_query

MAX_PLAYLIST_BYTES = 16 << 20
MAX_SEGMENT_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class CompareConfig:
    """What to compare and how gently."""

    urls: tuple[str, ...]
    duration: float = 120.0  # seconds
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()  # added to every request
    timeout: float = 5.0  # seconds per request
    max_rps: float = 10.0  # requests per second, all origins together
    max_kbps: float = 8000.0  # segment download bandwidth, kbit/s
    polls_per_target: float = 4.0
    variant: int = 0  # which variant of a multivariant playlist to follow
    verify_tls: bool = True
    seed: int | None = None
    backlog: int = 200  # segment names waiting for download before the oldest are skipped


def labels_for(n: int) -> list[str]:
    """``A``, ``B``, ... ``Z``, ``AA``, ... for origins in URL order."""
    out = []
    for i in range(n):
        label, k = "", i + 1
        while k:
            k, r = divmod(k - 1, 26)
            label = chr(65 + r) + label
        out.append(label)
    return out


def with_query(url: str, query: Sequence[tuple[str, str]]) -> str:
    """``url`` with ``query`` parameters added (existing ones of the same name replaced)."""
    if not query:
        return url
    parts = urlsplit(url)
    names = {k for k, _ in query}
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if k not in names] + list(query)
    return urlunsplit(parts._replace(query=urlencode(params)))


def describe_error(exc: BaseException) -> str:
    """One short line for an HTTP failure: TLS, refused, unknown host, timed out, ..."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 10:
        chain.append(link)
        link = link.__cause__ or link.__context__
    text = str(exc) or type(exc).__name__
    for link in chain:
        if isinstance(link, ssl.SSLError) or "[SSL" in str(link) or "CERTIFICATE" in str(link):
            return f"TLS error: {link}"
    for link in chain:
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return f"cannot resolve the host ({link.strerror or link})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    return f"{type(exc).__name__}: {text}"


class RateLimiter:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.tokens = self.burst
        self.last = clock()
        self._lock = asyncio.Lock()

    def wait_for(self, n: float) -> float:
        """Take ``n`` tokens if there are enough (0.0), else seconds until there will be."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        need = min(n, self.burst)  # a larger n goes into debt, paid by later waits
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        async with self._lock:
            for _ in range(1000):
                delay = self.wait_for(n)
                if delay <= 0:
                    return
                await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, or why there is none."""

    url: str
    status: int | None
    body: bytes = b""
    etag: str | None = None
    content_type: str = ""
    error: str | None = None


class Http:
    """httpx with timeouts, the run's headers and query, the request and byte budgets."""

    def __init__(self, cfg: CompareConfig) -> None:
        self.cfg = cfg
        self.client = httpx.AsyncClient(
            headers=dict(cfg.headers), verify=cfg.verify_tls, follow_redirects=True,
            timeout=httpx.Timeout(cfg.timeout),
            limits=httpx.Limits(max_connections=4 * len(cfg.urls) + 4))
        self.requests = RateLimiter(cfg.max_rps, max(cfg.max_rps, len(cfg.urls)))
        rate = cfg.max_kbps * 1000 / 8
        self.bytes = RateLimiter(rate, rate)

    async def get(self, url: str, *, limit: int = MAX_PLAYLIST_BYTES,
                  counted: bool = True) -> Answer:
        """GET ``url`` (with the run's query); ``counted=False``: tokens already taken."""
        if counted:
            await self.requests.acquire()
        target = with_query(url, self.cfg.query)
        try:
            async with self.client.stream("GET", target) as resp:
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        return Answer(url, resp.status_code,
                                      error=f"answer larger than {limit >> 20} MiB")
                    chunks.append(chunk)
                return Answer(url, resp.status_code, b"".join(chunks), resp.headers.get("etag"),
                              resp.headers.get("content-type", ""))
        except httpx.HTTPError as exc:
            return Answer(url, None, error=describe_error(exc))

    async def aclose(self) -> None:
        await self.client.aclose()


def _document(answer: Answer, now: datetime) -> Listing | Multivariant:
    """The answer as a playlist or MPD; CompareError naming the URL otherwise."""
    url = answer.url
    if answer.error is not None:
        raise CompareError(f"{url}: {answer.error}")
    if answer.status != 200:
        raise CompareError(f"{url}: HTTP {answer.status}")
    kind = classify(answer.body)
    if kind is None:
        start = answer.body[:40].decode("utf-8", "replace").strip().replace("\n", " ")
        raise CompareError(f"{url}: not an HLS playlist or DASH MPD (Content-Type "
                           f"{answer.content_type or 'none'}, body starts {start!r})")
    if kind == "hls":
        return parse_hls(answer.body.decode("utf-8", "replace"), url)
    return parse_mpd(answer.body, url, now)


def _kind(doc: Listing | Multivariant) -> str:
    return "hls-multivariant" if isinstance(doc, Multivariant) else doc.kind


async def probe(http: Http, cfg: CompareConfig) -> tuple[str, list[str], list[Event]]:
    """Check every URL once: (kind, media playlist or MPD URLs, multivariant events)."""
    now = datetime.now(UTC)
    answers = await asyncio.gather(*(http.get(u) for u in cfg.urls))
    docs = [_document(a, now) for a in answers]
    kinds = [_kind(d) for d in docs]
    if len(set(kinds)) > 1:
        raise CompareError("playlist types differ: " + ", ".join(
            f"{u} is {KIND_NAMES[k]}" for u, k in zip(cfg.urls, kinds, strict=True)))
    if kinds[0] != "hls-multivariant":
        return kinds[0], list(cfg.urls), []
    media_urls = []
    for url, doc in zip(cfg.urls, docs, strict=True):
        assert isinstance(doc, Multivariant)
        if cfg.variant >= len(doc.variants):
            raise CompareError(f"{url}: {len(doc.variants)} variant(s), no variant "
                               f"{cfg.variant}")
        media_urls.append(urljoin(url, doc.variants[cfg.variant]))
    events = []
    variants = [d.variants for d in docs if isinstance(d, Multivariant)]
    if len(set(variants)) > 1:
        events.append(Event(0.0, VARIANTS_DIFFER, tuple(range(len(docs))), "; ".join(
            f"{u}: {' '.join(v)}" for u, v in zip(cfg.urls, variants, strict=True))))
    media = await asyncio.gather(*(http.get(u) for u in media_urls))
    for answer in media:
        if _kind(_document(answer, now)) != "hls-media":
            raise CompareError(f"{answer.url}: variant {cfg.variant} is not a media playlist")
    return kinds[0], media_urls, events


async def poll(http: Http, urls: Sequence[str], now: datetime) -> list[Listing | str]:
    """Every URL at once: per origin its Listing or why there is none."""
    await http.requests.acquire(len(urls))
    answers = await asyncio.gather(*(http.get(u, counted=False) for u in urls))
    out: list[Listing | str] = []
    for answer in answers:
        try:
            doc = _document(answer, now)
        except CompareError as exc:
            out.append(str(exc).removeprefix(f"{answer.url}: "))
            continue
        out.append(doc if isinstance(doc, Listing) else "a multivariant playlist answered")
    return out


@dataclass(frozen=True, slots=True)
class Job:
    """One segment name to fetch from every origin."""

    t: float
    track: str
    name: str
    uris: tuple[str, ...]  # per origin: its own URI for the name, or the first lister's
    init_uris: tuple[str | None, ...]  # per origin, for fMP4 timestamps
    is_init: bool
    pdt: datetime | None


class Downloader:
    """Fetches each listed segment name once from every origin and records the check."""

    def __init__(self, http: Http, cmp: Comparison, clock: Callable[[], float]) -> None:
        self.http = http
        self.cmp = cmp
        self.clock = clock
        self.queue: deque[Job] = deque()
        self.seen: set[tuple[str, str, bool]] = set()
        self.inits: dict[tuple[int, str], asyncio.Task[Answer]] = {}
        self.wake = asyncio.Event()

    def enqueue(self, t: float, listings: Sequence[Listing | None]) -> None:
        """Queue the names first listed at this instant (gaps are never fetched)."""
        own: dict[tuple[str, str, bool], dict[int, tuple[str, str | None]]] = {}
        pdts: dict[tuple[str, str, bool], datetime | None] = {}
        order: list[tuple[str, str, bool]] = []
        for i, listing in enumerate(listings):
            for e in listing.entries if listing is not None else ():
                items: list[tuple[str, str | None, bool]] = (
                    [(e.init, None, True)] if e.init else [])
                items += [] if e.gap else [(e.uri, e.init, False)]
                for uri, init, is_init in items:
                    key = (e.track, strip_query(uri), is_init)
                    if key in self.seen:
                        continue
                    if key not in own:
                        own[key] = {}
                        pdts[key] = None if is_init else e.pdt
                        order.append(key)
                    own[key].setdefault(i, (uri, init))
        for key in order:
            self.seen.add(key)
            self.cmp.listed += 1
            first = next(iter(own[key].values()))
            per = [own[key].get(i, first) for i in range(len(listings))]
            self.queue.append(Job(t, key[0], key[1], tuple(u for u, _ in per),
                                  tuple(init for _, init in per), key[2], pdts[key]))
        while len(self.queue) > self.http.cfg.backlog:
            self.queue.popleft()
            self.cmp.skipped += 1
        self.wake.set()

    async def run(self, on_update: Callable[[], None]) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            job = self.queue.popleft()
            try:
                await self.check(job)
            except asyncio.CancelledError:
                self.cmp.skipped += 1
                raise
            on_update()

    def pending(self) -> int:
        return len(self.queue)

    async def check(self, job: Job) -> None:
        fetched = await asyncio.gather(*(self.fetch(i, job) for i in range(len(job.uris))))
        start = None
        if job.pdt is not None and self.cmp.started_at is not None:
            start = round((job.pdt - self.cmp.started_at).total_seconds(), 3)
        check, events = check_segment(job.t, job.track, job.name, fetched, self.cmp.labels,
                                      init=job.is_init, now=self.clock(), start=start)
        self.cmp.add_check(check, events)

    async def fetch(self, i: int, job: Job) -> Fetched:
        if job.is_init:
            answer = await self.init(i, job.uris[i])
        else:
            answer = await self.http.get(urljoin(self.cmp.media_urls[i], job.uris[i]),
                                         limit=MAX_SEGMENT_BYTES)
        await self.http.bytes.acquire(len(answer.body))
        if answer.error is not None or answer.status != 200:
            return Fetched(answer.status, answer.error)
        timing = None
        if not job.is_init:
            init_uri = job.init_uris[i]
            init = await self.init(i, init_uri) if init_uri else None
            init_body = init.body if init is not None and init.status == 200 else None
            if init_uri is None or init_body is not None:
                timing = await asyncio.to_thread(first_timestamps, answer.body, init_body)
        return Fetched(200, None, hashlib.sha256(answer.body).hexdigest(), answer.etag,
                       len(answer.body), timing)

    async def init(self, i: int, uri: str) -> Answer:
        """An init segment of origin ``i``, fetched once."""
        key = (i, strip_query(uri))
        if key not in self.inits:
            url = urljoin(self.cmp.media_urls[i], uri)
            self.inits[key] = asyncio.ensure_future(self.http.get(url, limit=MAX_SEGMENT_BYTES))
        return await asyncio.shield(self.inits[key])


async def run_compare(cfg: CompareConfig, stop: asyncio.Event,
                      on_update: Callable[[Comparison, float], None] | None = None,
                      ) -> tuple[Comparison, float]:
    """Run one comparison until ``cfg.duration`` or ``stop``; (record, seconds run)."""
    if len(cfg.urls) < 2:
        raise CompareError("give at least two URLs to compare")
    loop = asyncio.get_running_loop()
    rng = random.Random(cfg.seed)
    http = Http(cfg)
    try:
        kind, media_urls, events = await probe(http, cfg)
        cmp = Comparison(cfg.urls, labels_for(len(cfg.urls)), kind, media_urls)
        cmp.started_at = datetime.now(UTC)
        cmp.events += events
        t0 = loop.time()

        def elapsed() -> float:
            return loop.time() - t0

        def update() -> None:
            if on_update is not None:
                on_update(cmp, elapsed())

        downloader = Downloader(http, cmp, elapsed)
        worker = asyncio.create_task(downloader.run(update))
        target = 0.0
        try:
            while not stop.is_set():
                t = elapsed()
                results = await poll(http, media_urls, datetime.now(UTC))
                cmp.add_instant(t, results)
                listings = [r if isinstance(r, Listing) else None for r in results]
                downloader.enqueue(t, listings)
                target = max([x.target_duration for x in listings if x is not None] + [target])
                update()
                interval = (target or 2.0) / cfg.polls_per_target * rng.uniform(0.75, 1.25)
                interval = max(interval, len(media_urls) / cfg.max_rps)
                remaining = cfg.duration - elapsed()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(interval, remaining))
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            cmp.skipped += downloader.pending()
            for task in downloader.inits.values():
                task.cancel()
        return cmp, elapsed()
    finally:
        await http.aclose()
