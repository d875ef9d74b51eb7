"""Smoke version of the alignment-drift benchmark (``benchmarks/drift``), real processes.

One short identical-feed scenario, sidecar only: an ffmpeg encoder publishing to nginx-rtmp,
two ``sidecar serve`` nodes pulling from it with one shared store (and two more with only the
CMAF output, their own store), 2 s segments, about 25 s.
A missing ffmpeg, nginx or RTMP module is a failure (``RuntimeError`` naming the Debian
package), never a skip. The full benchmark is ``python -m benchmarks.drift`` and not a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.drift.scenarios import SCENARIOS, RunConfig, check_requirements, run_scenario


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_two_sidecar_nodes_publish_identical_segments(tmp_path: Path) -> None:
    check_requirements()
    cfg = RunConfig(nodes=2, seconds=20.0, segment_duration=2.0, keyint=1.0,
                    packagers=("sidecar", "sidecar-cmaf"))
    res = run_scenario(SCENARIOS["identical"], cfg, tmp_path)
    assert [r["packager"] for r in res.records] == ["sidecar", "sidecar-cmaf"]
    for rec in res.records:
        detail = f"record: {rec}\nevents: {res.events}\nproblems: {res.problems}"
        assert rec["segments"] >= 3, detail
        assert rec["unidentified"] == 0, detail
        assert rec["identical_names"] == 1.0, detail
        assert rec["identical_bytes"] == 1.0, detail
        assert rec["identical_sequence"] == 1.0, detail
        assert rec["drift_ms_max"] == 0, detail
