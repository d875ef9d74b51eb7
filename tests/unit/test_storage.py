from __future__ import annotations

import threading
from pathlib import Path

from sidecar.storage import SegmentDir


def test_concurrent_writes_of_one_segment_publish_whole_files(tmp_path: Path) -> None:
    # A peer fetch and the local pipeline can publish the same number at the same moment.
    d = SegmentDir(tmp_path, "m4s")
    data = bytes(range(256)) * 4096  # 1 MiB: large enough for writes to interleave
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def writer() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(10):
                d.write(7, data)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert d.path_for(7).read_bytes() == data
    assert list(tmp_path.glob(".*.tmp")) == []
    seg = d.get(7)
    assert seg is not None and seg.size == len(data)
