"""HyperFrames projects without a browser: detection and static reading of the project
(`project`), its media and audio plan (`media`), and the soundtrack mix with ffmpeg (`audio`).
"""
