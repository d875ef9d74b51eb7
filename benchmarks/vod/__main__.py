"""VOD benchmark: time to first segment (cold, warm) over HTTP, segments/s under load and
peak memory of ``sidecar serve --vod-root``, side by side with ``ffmpeg -c copy -f hls``
and nginx serving ``sidecar package`` output statically. See README.md.

``python -m benchmarks.vod [--minutes 10] [--out benchmarks/out/vod.json]``
"""

import sys

from benchmarks.vod.bench import main

sys.exit(main())
