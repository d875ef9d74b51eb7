"""Reading packets by index rows: seeks land anywhere, the payloads are always the right ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures.vod import make_clip, vod_media
from sidecar.vod.index import IndexStale, PacketIndex, build_index
from sidecar.vod.package import Vod
from sidecar.vod.reader import Source, SourcePool

D = 180_000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return vod_media(tmp_path_factory.mktemp("vod-reader"), seconds=12)


def linear(ix: PacketIndex) -> dict[int, bytes]:
    """Every row's payload from one pass from the start."""
    source = Source.open(ix)
    want = {(int(ix.track[r]), int(ix.raw[r]), int(ix.size[r])): r for r in range(len(ix))}
    out = {}
    for track, pkt in source.demux():
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        out[want[(track, ts, pkt.size)]] = bytes(pkt)
    source.close()
    assert len(out) == len(ix)
    return out


@pytest.mark.parametrize("name", ["mp4", "faststart.mp4", "mkv", "ts", "wrapped.ts",
                                  "nobframes.mp4", "audio.m4a", "audio.mp3"])
def test_segments_read_in_any_order_match_a_linear_pass(media: dict[str, Path],
                                                        name: str) -> None:
    ix = build_index(media[name])
    vod = Vod.of(ix, D)
    truth = linear(ix)
    source = Source.open(ix)
    order = np.random.default_rng(3).permutation(len(vod.spans)).tolist()
    for n in order + order[::-1]:
        rows = vod.plan.rows(n)
        packets = source.read(rows)
        assert [p.data for p in packets] == [truth[r] for r in rows.tolist()]
        assert [p.pts for p in packets] == ix.pts[rows].tolist()
        # One track alone (a CMAF segment) is found as well.
        one = rows[ix.track[rows] == ix.driver.track]
        assert [p.data for p in source.read(one)] == [truth[r] for r in one.tolist()]
    source.close()


def test_a_file_replaced_after_indexing_is_stale(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "a.mp4"
    shutil.copy(media["mp4"], path)
    ix = build_index(path)
    make_clip(path, 4)
    with pytest.raises(IndexStale):
        Source.open(ix)


def test_pool_reuses_open_files(media: dict[str, Path]) -> None:
    ix = build_index(media["mp4"])
    pool = SourcePool(2)
    a = pool.acquire(ix)
    pool.release(a)
    b = pool.acquire(ix)
    assert b is a
    c = pool.acquire(ix)  # the one idle source is taken: a new one opens
    assert c is not a
    pool.release(b)
    pool.release(c)
    pool.close()
