"""Access control: playback tokens (``tokens.py``)."""
