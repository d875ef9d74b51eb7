"""What a node serves for VOD: safe file lookup under the roots, cached indexes, JIT output.

Every answer is a pure function of the file's bytes and the segment duration: nothing
depends on the path, inode or mtime (those only key this node's caches), so two nodes
with copies of a file serve identical playlists, MPDs and segments with identical ETags.
Blocking work (stat, demux, mux) runs in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from sidecar.errors import BadRequest, NotFound
from sidecar.manifests.hls import CMAF_PLAYLIST, MEDIA_PLAYLIST, MULTIVARIANT_PLAYLIST, RENDITION
from sidecar.vod.index import IndexCache, IndexStale, PacketIndex
from sidecar.vod.package import (
    INIT,
    MPD,
    Vod,
    cmaf_multivariant,
    render_static_mpd,
    rendition_group,
    ts_multivariant,
)
from sidecar.vod.reader import SourcePool

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MPD_TYPE = "application/dash+xml"
MEDIA_TYPES = {"ts": "video/mp2t", "m4s": "video/iso.segment", "mp4": "video/mp4"}
# Wowza-style entry: /vod/_definst_/mp4:{path}/playlist.m3u8 (and manifest.mpd).
WOWZA_PREFIX = re.compile(r"^_definst_/(?:mp4:)?")
_ENTRIES = (MULTIVARIANT_PLAYLIST, CMAF_PLAYLIST, MPD)
_MEMBER_RES = (rf"{RENDITION}/{re.escape(MEDIA_PLAYLIST)}|{RENDITION}/\d{{1,9}}\.ts"
               rf"|(?:video|audio)/(?:{re.escape(MEDIA_PLAYLIST)}|{re.escape(INIT)}"
               r"|\d{1,9}\.m4s)")
_ENTRY_RES = "|".join(re.escape(e) for e in _ENTRIES)
_RESOURCE = re.compile(rf"^(?P<file>.+)/(?P<res>{_ENTRY_RES}|{_MEMBER_RES})$")
# nginx-vod-module style rendition group: PREFIX,A,B,...,SUFFIX.urlset/ names the files
# PREFIX+A+SUFFIX, PREFIX+B+SUFFIX, ... (``movies/,a.mp4,b.mp4,.urlset``); members'
# files are under ``{i}/`` (``{i}/src/3.ts``).
_URLSET = re.compile(r"^(?P<pre>[^,]*),(?P<mid>(?:[^,/]+,)+)(?P<post>[^,/]*)\.urlset/"
                     rf"(?P<res>{_ENTRY_RES}|(?P<i>\d{{1,2}})/(?:{_MEMBER_RES}))$")
MAX_GROUP = 16


@dataclass(frozen=True, slots=True)
class VodRequest:
    """What a URL asks for: the file(s), which member (None: the entry manifests), what."""

    files: tuple[str, ...]
    member: int | None
    resource: str


def parse_request(rest: str) -> VodRequest:
    """``movies/a.mp4/src/3.ts``, ``_definst_/mp4:a.mp4/playlist.m3u8``,
    ``movies/,a.mp4,b.mp4,.urlset/1/src/3.ts`` -> files, member and resource."""
    rest = WOWZA_PREFIX.sub("", rest, count=1)
    group = _URLSET.match(rest)
    if group is not None:
        mids = [m for m in group.group("mid").split(",") if m]
        files = tuple(f"{group.group('pre')}{m}{group.group('post')}" for m in mids)
        if len(files) > MAX_GROUP:
            raise BadRequest(f"a urlset of at most {MAX_GROUP} files")
        res = group.group("res")
        if group.group("i") is None:
            return VodRequest(files, None, res)
        member = int(group.group("i"))
        if member >= len(files):
            raise NotFound(f"the urlset has no member {member}")
        return VodRequest(files, member, res.partition("/")[2])
    m = _RESOURCE.match(rest)
    if m is None:
        raise NotFound("no such VOD resource (expected FILE/playlist.m3u8, FILE/cmaf.m3u8, "
                       "FILE/manifest.mpd or a name they list)")
    res = m.group("res")
    return VodRequest((m.group("file"),), None if res in _ENTRIES else 0, res)


@dataclass(frozen=True, slots=True)
class Resource:
    """One answer: its bytes, type, validator and whether it may be cached for long."""

    body: bytes
    media_type: str
    etag: str
    segment: bool

    @classmethod
    def of(cls, body: bytes, media_type: str, *, segment: bool) -> Resource:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, media_type, etag, segment)


def safe_relative(path: str) -> PurePosixPath:
    """A relative path that cannot climb out of a root (raises BadRequest)."""
    if not path:
        raise BadRequest("empty file path")
    if "\x00" in path or "\\" in path:
        raise BadRequest("file path with a NUL byte or a backslash")
    if path.startswith("/"):
        raise BadRequest("absolute file paths are not allowed")
    for part in path.split("/"):
        decoded = part
        for _ in range(3):  # double and triple encodings (%252e%252e) count too
            decoded = unquote(decoded)
        if part in ("", ".", "..") or decoded in (".", "..") or "/" in decoded or (
                "\x00" in decoded):
            raise BadRequest(f"file path component {part!r} is not allowed")
    return PurePosixPath(path)


class VodService:
    """Serves the files under ``roots`` (searched in order) as HLS (TS, fMP4) and DASH."""

    def __init__(self, roots: Sequence[Path], cache_dir: Path | None, segment_duration: int,
                 *, segment_cache_bytes: int = 64 << 20, open_files: int = 8) -> None:
        if segment_duration <= 0:
            raise ValueError("segment duration must be positive")
        self.roots = tuple(Path(r).resolve() for r in roots)
        self.segment_duration = segment_duration
        self.indexes = IndexCache(cache_dir)
        self.sources = SourcePool(open_files)
        self._lock = threading.Lock()
        self._vods: OrderedDict[tuple[str, ...], tuple[Vod, ...]] = OrderedDict()
        self._segments: OrderedDict[tuple[str, int, str], Resource] = OrderedDict()
        self._segment_bytes = 0
        self._segment_limit = segment_cache_bytes

    def close(self) -> None:
        self.sources.close()

    # -- lookup -----------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The file ``path`` names under the first root that has it (BadRequest, NotFound)."""
        rel = safe_relative(path)
        for root in self.roots:
            candidate = root.joinpath(*rel.parts)
            try:
                real = candidate.resolve(strict=True)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, RuntimeError) as exc:  # loops, permissions
                raise NotFound(f"{path}: cannot be resolved ({exc.__class__.__name__})") from exc
            if not real.is_relative_to(root):
                raise NotFound(f"{path}: leads outside the VOD root (symlink)")
            if not real.is_file():
                raise NotFound(f"{path}: not a file")
            return real
        raise NotFound(f"{path}: no such file")

    def vod(self, path: str) -> Vod:
        """The file's index and cut, as the file is now."""
        index = self.indexes.get(self.resolve(path))
        return self._vod(index)

    def _vod(self, index: PacketIndex) -> Vod:
        return self._group((index,))[0]

    def _group(self, indexes: tuple[PacketIndex, ...]) -> tuple[Vod, ...]:
        key = tuple(ix.key.digest for ix in indexes)
        with self._lock:
            found = self._vods.get(key)
            if found is not None and all(v.index.key == ix.key for v, ix in zip(
                    found, indexes, strict=True)):
                self._vods.move_to_end(key)
                return found
        vods = rendition_group(indexes, self.segment_duration)
        with self._lock:
            self._vods[key] = vods
            while len(self._vods) > 64:
                self._vods.popitem(last=False)
        return vods

    # -- answers ----------------------------------------------------------------------

    def get(self, rest: str) -> Resource:
        """The resource a ``/vod/{rest}`` URL names (blocking; raises SidecarError)."""
        request = parse_request(rest)
        try:
            return self._get(request)
        except IndexStale:
            return self._get(request)  # the file changed under us: once more, new index

    async def aget(self, rest: str) -> Resource:
        return await asyncio.to_thread(self.get, rest)

    def _get(self, request: VodRequest) -> Resource:
        vods = self._group(tuple(self.indexes.get(self.resolve(f)) for f in request.files))
        res = request.resource
        if request.member is None:
            render = {MULTIVARIANT_PLAYLIST: ts_multivariant, CMAF_PLAYLIST: cmaf_multivariant,
                      MPD: render_static_mpd}[res]
            return Resource.of(render(vods).encode(), MPD_TYPE if res == MPD else PLAYLIST_TYPE,
                               segment=False)
        vod = vods[request.member]
        kind, _, name = res.partition("/")
        if name == MEDIA_PLAYLIST:
            text = vod.ts_media() if kind == RENDITION else vod.cmaf_media(kind)
            return Resource.of(text.encode(), PLAYLIST_TYPE, segment=False)
        cache_key = (vod.index.key.digest, vod.index.offset, res)
        with self._lock:
            hit = self._segments.get(cache_key)
            if hit is not None:
                self._segments.move_to_end(cache_key)
                return hit
        resource = self._mux(vod, kind, name)
        self._remember(cache_key, resource)
        return resource

    def _mux(self, vod: Vod, kind: str, name: str) -> Resource:
        if name == INIT:
            vod.cmaf_meta(kind)  # 415 before opening the file when CMAF is impossible
        else:
            number = int(name.split(".")[0])
            if kind == RENDITION:
                vod.check(number)
            elif not len(vod.cmaf_rows(kind, number)):
                raise NotFound(f"segment {number} has no {kind} packets")
        source = self.sources.acquire(vod.index)
        try:
            if name == INIT:
                body, ext = vod.cmaf_init(source, kind), "mp4"
            elif kind == RENDITION:
                body, ext = vod.ts_segment(source, number), "ts"
            else:
                body, ext = vod.cmaf_segment(source, kind, number), "m4s"
        except BaseException:
            self.sources.discard(source)
            raise
        self.sources.release(source)
        return Resource.of(body, MEDIA_TYPES[ext], segment=True)

    def _remember(self, key: tuple[str, int, str], resource: Resource) -> None:
        size = len(resource.body)
        if size > self._segment_limit // 4:
            return
        with self._lock:
            if key in self._segments:
                return
            self._segments[key] = resource
            self._segment_bytes += size
            while self._segment_bytes > self._segment_limit:
                _, old = self._segments.popitem(last=False)
                self._segment_bytes -= len(old.body)
