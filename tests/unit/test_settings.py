from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.settings import StreamSpec, load_settings


def test_flags_env_toml_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('node_id = "from-file"\nwindow = 7\nsegment_duration = 4\n'
                   'listen = "127.0.0.1:9000"\n'
                   '[streams]\n"live/a" = "rtmp://127.0.0.1:1935/live/a"\n')
    monkeypatch.setenv("SIDECAR_WINDOW", "12")
    monkeypatch.setenv("SIDECAR_NODE_ID", "from-env")
    s = load_settings(cfg, node_id="from-flag")
    assert s.node_id == "from-flag"      # flag beats env and file
    assert s.window == 12                # env beats file
    assert s.segment_duration == 4       # file beats default
    assert s.duration_ticks == 360_000
    assert s.port == 9000 and s.host == "127.0.0.1"
    assert [x.key for x in s.streams] == ["live/a"]


def test_streams_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_STREAMS", '["live/a=synthetic:", "live/b=udp://127.0.0.1:5000"]')
    s = load_settings(None)
    assert [(x.key, x.input) for x in s.streams] == [("live/a", "synthetic:"),
                                                     ("live/b", "udp://127.0.0.1:5000")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("live/demo", "APP/NAME=INPUT"),
        ("live/demo=", "APP/NAME=INPUT"),
        ("live=rtmp://x", "two names"),
        ("live/../x=rtmp://x", "two names"),
        ("li ve/x=rtmp://x", "two names"),
        ("../x=rtmp://x", "two names"),
    ],
)
def test_bad_stream_specs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StreamSpec.parse(text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segment_duration": "0.1"}, "between 0.5 and 60"),
        ({"segment_duration": "1.0000001"}, "90 kHz"),
        ({"listen": "nohost"}, "HOST:PORT"),
        ({"window": 1}, "window"),
        ({"streams": ["live/a=synthetic:", "live/a=synthetic:"]}, "configured twice"),
    ],
)
def test_bad_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, **overrides)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_cli_reports_bad_stream_clearly(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--data-dir", str(tmp_path),
                        "--stream", "nonsense"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "error: stream 'nonsense': expected APP/NAME=INPUT" in r.stderr


def test_cli_reports_missing_input_file(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--data-dir", str(tmp_path),
                        "--stream", f"live/x={tmp_path}/missing.mp4"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
