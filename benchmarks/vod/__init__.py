"""VOD benchmark: index, time to first segment cold/warm, vs ffmpeg -c copy -f hls."""
