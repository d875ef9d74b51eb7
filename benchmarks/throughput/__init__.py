"""Throughput benchmark: one ``sidecar serve`` vs N ``ffmpeg -c copy -f hls`` (see README.md)."""
