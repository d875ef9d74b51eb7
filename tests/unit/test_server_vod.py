"""``serve`` with --vod-root: the VOD router mounted in front of the live routes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fixtures.vod import make_clip
from sidecar.clock import ManualClock
from sidecar.errors import ConfigError
from sidecar.node import Node
from sidecar.server import create_app
from sidecar.settings import load_settings
from sidecar.store.sqlite import SqliteStore


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("vod-src") / "clip.mp4", 6)


def vod_node(tmp_path: Path, roots: list[Path] | list[str]) -> Node:
    settings = load_settings(node_id="v", data_dir=tmp_path / "data", vod_roots=roots,
                             segment_duration="2")
    return Node(settings, SqliteStore(tmp_path / "t.db"), ManualClock(0), {})


def test_a_vod_only_node_is_ready_and_serves_files_not_live_names(tmp_path: Path,
                                                                  clip: Path) -> None:
    root = tmp_path / "movies"
    root.mkdir()
    shutil.copy(clip, root / "clip.mp4")
    with TestClient(create_app(vod_node(tmp_path, [root]), run_pipelines=False)) as c:
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["vod_roots"] == {str(root): True}
        pl = c.get("/vod/clip.mp4/playlist.m3u8")
        assert pl.status_code == 200 and "#EXT-X-STREAM-INF" in pl.text
        media = c.get("/vod/clip.mp4/src/media.m3u8")
        assert "#EXT-X-ENDLIST" in media.text and "#EXTINF:2.00000," in media.text
        assert "PROGRAM-DATE-TIME" not in media.text
        assert c.get("/vod/clip.mp4/manifest.mpd").text.count('type="static"') == 1
        missing = c.get("/vod/other.mp4/playlist.m3u8")
        assert missing.status_code == 404 and "no such file" in missing.json()["error"]
        # Not a live stream named vod/clip.mp4: the live routes never see /vod/.
        assert c.get("/live/demo/playlist.m3u8").status_code == 404
        # Index cache under the data directory, as documented.
        assert any((tmp_path / "data" / "vod-index").iterdir())
        # A root that goes away makes the node unready (the balancer stops sending to it).
        shutil.rmtree(root)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["vod_roots"] == {str(root): False}


def test_named_roots_are_served_under_their_own_names(tmp_path: Path, clip: Path) -> None:
    plain, movies, more = tmp_path / "plain", tmp_path / "movies", tmp_path / "more"
    for root, name in ((plain, "a.mp4"), (movies, "b.mp4"), (more, "c.mp4")):
        root.mkdir()
        shutil.copy(clip, root / name)
    roots = [str(plain), f"movies={movies}", f"movies={more}"]
    node = vod_node(tmp_path, roots)
    assert node.settings.vod_apps == {"vod": [plain], "movies": [movies, more]}
    with TestClient(create_app(node, run_pipelines=False)) as c:
        assert c.get("/vod/a.mp4/playlist.m3u8").status_code == 200
        assert c.get("/movies/b.mp4/playlist.m3u8").status_code == 200
        assert c.get("/movies/c.mp4/cmaf.m3u8").status_code == 200  # the second root
        assert c.get("/movies/_definst_/mp4:b.mp4/manifest.mpd").status_code == 200
        # Each name sees only its own roots.
        assert c.get("/vod/b.mp4/playlist.m3u8").status_code == 404
        assert c.get("/movies/a.mp4/playlist.m3u8").status_code == 404
        body = c.get("/movies/b.mp4/src/0.ts").content
        assert body == c.get("/vod/a.mp4/src/0.ts").content  # same file, same bytes
        assert c.get("/readyz").json()["vod_roots"] == {str(plain): True, str(movies): True,
                                                        str(more): True}


def test_a_node_with_neither_streams_nor_files_is_not_ready(tmp_path: Path) -> None:
    with TestClient(create_app(vod_node(tmp_path, []), run_pipelines=False)) as c:
        assert c.get("/readyz").status_code == 503


@pytest.mark.parametrize("overrides, message", [
    ({"vod_roots": ["/nonexistent/movies"]}, "is not a directory"),
    ({"vod_segment_duration": "0.1"}, "between 0.5 and 60"),
    ({"streams": ["vod/demo=synthetic:"]}, "'vod' is reserved"),
    ({"vod_roots": ["bad/name=/tmp"]}, "expected DIR or NAME=DIR"),
    ({"vod_roots": ["movies="]}, "expected DIR or NAME=DIR"),
    ({"vod_roots": ["movies={tmp}"], "streams": ["movies/demo=synthetic:"]},
     "its application name is a VOD root's"),
])
def test_bad_vod_settings_are_named(overrides: dict[str, object], message: str,
                                    tmp_path: Path) -> None:
    filled = {k: [str(x).format(tmp=tmp_path) for x in v] if isinstance(v, list) else v
              for k, v in overrides.items()}
    with pytest.raises(ConfigError, match=message):
        load_settings(**filled)


def test_vod_roots_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("SIDECAR_VOD_ROOTS", f"{a}:movies={b}")
    assert load_settings().vod_apps == {"vod": [a], "movies": [b]}
