"""Manifest renderers side by side (HLS, DASH), both fed by the timeline model."""
