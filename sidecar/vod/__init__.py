"""Just-in-time VOD packaging of files: index, segmentation rule, packaging, serving.

Stages, data flowing one way: ``index`` (one demux pass into numpy arrays, cached on
disk) -> ``segmentation`` (the pure rule) -> ``package`` (segments, playlists, MPD) ->
``service`` (what a node serves) -> ``routes`` (the HTTP edge).
"""
