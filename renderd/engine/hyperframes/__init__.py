"""What the engine does to serve a HyperFrames page: the vendored runtime (`runtime`), the
CLI's deterministic fonts (`fonts`) and extracted `<video>` frames (`media_frames`).
"""
