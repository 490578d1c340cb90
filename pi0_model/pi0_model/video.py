"""MP4 camera streams with PyAV: encode an episode, append episodes into one file, decode frames by time.

Frame k of a file written here has the presentation time k / fps exactly: the
encoder's time base is 1 / fps and the MP4 muxer's track timescale is fps
times a power of two, so every frame lasts a whole number of ticks. B-frames
are off, so packets come in presentation order and no edit list shifts the
first frame; appending a file's packets after another's with their times
shifted by the frames already written (what v3.0 does with episodes) keeps
that rule, without re-encoding.

Decoding converts to RGB with FFmpeg's scaler (``to_ndarray(format="rgb24")``),
as LeRobot's PyAV backend does, so both read identical pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .dataset_format import DatasetFormatError, VideoInfo

CODECS = ("h264", "libsvtav1")
# h264 (libx264) plays and decodes everywhere (torchvision's PyAV backend, torchcodec, browsers); LeRobot's own
# default is AV1 (libsvtav1, crf 30), smaller and slower to encode. crf 18 keeps 8-bit frames near-lossless.
DEFAULT_CRF = {"h264": 18, "libsvtav1": 30}
PIX_FMT = "yuv420p"
GOP = 2  # a keyframe every other frame, as LeRobot encodes: random access decodes at most one extra frame


@dataclass(frozen=True)
class VideoSettings:
    codec: str = "h264"  # one of CODECS
    crf: int | None = None  # None: DEFAULT_CRF of the codec

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise DatasetFormatError(f"video codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise DatasetFormatError(f"crf must be within [0, 63], got {self.crf}")

    def options(self) -> dict[str, str]:
        crf = DEFAULT_CRF[self.codec] if self.crf is None else self.crf
        options = {"g": str(GOP), "crf": str(crf)}
        if self.codec == "h264":
            options["bf"] = "0"
        else:
            options["preset"] = "12"  # LeRobot's choice: SVT-AV1's fastest preset
        return options

    @staticmethod
    def size_problem(width: int, height: int) -> str:
        """Why a frame size cannot be encoded ("" if it can): yuv420p halves both chroma dimensions."""
        if width % 2 or height % 2:
            return f"{width}x{height} frames cannot be encoded as {PIX_FMT}: width and height must be even"
        return ""


class EpisodeVideoWriter:
    """Encodes one camera's frames of one episode into an MP4 file."""

    def __init__(self, path: Path, fps: int, width: int, height: int, settings: VideoSettings) -> None:
        problem = settings.size_problem(width, height)
        if problem:
            raise DatasetFormatError(problem)
        self.path = path
        self.frames = 0
        self._size = (height, width)
        self._time_base = Fraction(1, fps)
        self._container: Any = av.open(str(path), "w")
        stream: Any = self._container.add_stream(settings.codec, rate=fps, options=settings.options())
        stream.width = width
        stream.height = height
        stream.pix_fmt = PIX_FMT
        stream.time_base = self._time_base
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (*self._size, 3) or rgb.dtype != np.uint8:
            raise DatasetFormatError(
                f"{self.path.name}: frame {self.frames} is {rgb.dtype} {rgb.shape}, expected uint8 {(*self._size, 3)}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


class VideoAppender:
    """One MP4 file that takes whole episode files one after the other (v3.0's per-camera video files)."""

    def __init__(self, path: Path, fps: int) -> None:
        self.path = path
        self.frames = 0
        self._fps = fps
        self._container: Any = None
        self._stream: Any = None

    def append(self, episode: Path) -> tuple[float, float]:
        """Copies the episode's packets after the frames written so far; returns its (from, to) seconds."""
        start = self.frames
        with av.open(str(episode)) as source:
            video: Any = source.streams.video[0]  # PyAV's stubs leave times and sizes optional
            ticks = 1 / (self._fps * video.time_base)
            if ticks.denominator != 1:
                raise DatasetFormatError(f"{episode}: time base {video.time_base} does not divide 1/{self._fps} s")
            if self._container is None:
                self._container = av.open(str(self.path), "w")
                self._stream = self._container.add_stream_from_template(video, opaque=True)
            count = 0
            packet: Any
            for packet in source.demux(video):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += start * int(ticks)
                packet.dts += start * int(ticks)
                packet.stream = self._stream
                self._container.mux(packet)
                count += 1
        self.frames += count
        return start / self._fps, self.frames / self._fps

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def video_info(path: Path, fps: int) -> VideoInfo:
    with av.open(str(path)) as container:
        stream: Any = container.streams.video[0]
        return VideoInfo(stream.height, stream.width, stream.codec_context.codec.canonical_name, stream.pix_fmt, fps)


def decode_frames(path: Path, fps: int, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, uint8 RGB [H, W, 3]) of frames first .. stop - 1 of the file (to its end when stop is None).

    Seeks to the keyframe at or before `first` and decodes from there; a frame
    number is its presentation time times fps, which must be a whole number.
    """
    with av.open(str(path)) as container:
        stream: Any = container.streams.video[0]
        if first > 0:
            container.seek(int(Fraction(first, fps) / stream.time_base), stream=stream, backward=True)
        expected = first
        frame: Any
        for frame in container.decode(stream):
            position = frame.pts * stream.time_base * fps
            if position.denominator != 1:
                raise DatasetFormatError(f"{path}: a frame at {float(frame.pts * stream.time_base)} s is off the grid")
            number = int(position)
            if number < first:
                continue
            if stop is not None and number >= stop:
                return
            if number != expected:
                raise DatasetFormatError(f"{path}: frame {expected} is missing (next is {number})")
            expected = number + 1
            yield number, frame.to_ndarray(format="rgb24")
