"""Generate-then-score: one video per reference clip, driven by the clip's first frame and its audio.

This is how the paper evaluates on HDTF and VFHQ. Each clip's first frame is the reference image and
its 16 kHz audio the driving audio; the stream engine generates chunk by chunk exactly as
`vividhead stream` does (same engine, same `stream_to_sink`, MP4 with the audio), and the result is
written as `<out>/<clip key>.mp4`, so generated and reference videos share keys.
"""

from __future__ import annotations

from pathlib import Path

from vividhead.evaluation.videos import list_videos


def generate_from_reference(engine, reference: Path, out_dir: Path, max_videos: int = 0) -> list[Path]:
    """Generate a video for each reference clip (at most `max_videos`, 0 = all); returns the MP4 paths."""
    from vividhead.inference.sinks import Mp4Sink, stream_to_sink

    items = list_videos(reference)[: max_videos or None]
    g = engine.geometry
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        clip = item.load()
        if clip.audio is None or len(clip.audio) == 0:
            raise ValueError(f"{item.origin}: no audio to drive generation (expected a wav or an audio stream)")
        path = out_dir / f"{item.key.replace('/', '_')}.mp4"
        tmp = path.with_name(f".{path.stem}.tmp.mp4")
        session = engine.session(engine.reference(clip.frames[0]))
        stream_to_sink(session, clip.audio, Mp4Sink(tmp, size=g.size, fps=g.fps), piece_seconds=g.chunk_seconds)
        tmp.replace(path)
        written.append(path)
    return written
