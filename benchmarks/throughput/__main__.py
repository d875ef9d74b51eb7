"""``python -m benchmarks.throughput``: see README.md beside this file."""

import sys

from benchmarks.throughput.bench import main

sys.exit(main())
