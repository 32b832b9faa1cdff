"""Lossy video compression of a clip through PyAV (FFmpeg), as RealBasicVSR does.

RealBasicVSR encodes the whole clip into an in-memory MP4 (``yuv420p``, a
1 frame/s time base, so the bitrate in bit/s is bits per frame) and decodes it
back. Frames are pushed one at a time and only the compressed bytes are kept,
so a long clip costs little memory.

Determinism: the encoder runs single-threaded. x264's output depends on its
thread count, so a fixed count is what makes a seed give the same bytes on
machines with different numbers of cores.
"""

from __future__ import annotations

import io

import numpy as np

from gbuf.errors import GbufError

#: The codecs RealBasicVSR draws from. In FFmpeg ``h264`` names the libx264 encoder too.
KNOWN_CODECS = ("libx264", "h264", "mpeg4")


def check_codec(codec: str) -> str:
    """Return the FFmpeg encoder's name for ``codec``; GbufError if unknown or unavailable."""
    import av

    if codec not in KNOWN_CODECS:
        raise GbufError(f"unknown video codec {codec!r}; known: {', '.join(KNOWN_CODECS)}")
    try:
        return av.codec.Codec(codec, "w").name
    except Exception:
        raise GbufError(f"video codec {codec!r} has no encoder in this PyAV/FFmpeg build") from None


class VideoCompressor:
    """Push uint8 RGB frames ``(H, W, 3)``; then :meth:`frames` yields the decoded ones.

    Every frame is encoded at the size of the first one (RealBasicVSR's
    encoder rescales later frames to it); odd sizes are padded by repeating the
    last row/column for ``yuv420p`` and cropped again on decode.
    """

    def __init__(self, codec: str, bitrate: int):
        import av

        check_codec(codec)
        self.codec = codec
        self.bitrate = int(bitrate)
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = None
        self._size = None
        self._count = 0
        self._closed = False

    @property
    def size(self) -> tuple[int, int] | None:
        return self._size

    def push(self, frame: np.ndarray) -> None:
        import av

        if self._closed:
            raise RuntimeError("VideoCompressor: push after close")
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        if self._stream is None:
            self._size = (h, w)
            stream = self._container.add_stream(self.codec, rate=1)
            stream.height, stream.width = h + h % 2, w + w % 2
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = self.bitrate
            stream.codec_context.thread_count = 1
            self._stream = stream
        elif (h, w) != self._size:
            raise ValueError(f"VideoCompressor: frame size {h}x{w} differs from the first {self._size}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self._count
        self._count += 1
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._closed = True

    def frames(self):
        """Decode the clip: yields uint8 ``(H, W, 3)`` frames in order (closes the encoder)."""
        import av

        self.close()
        if self._count == 0:
            return
        self._buffer.seek(0)
        h, w = self._size
        decoded = 0
        with av.open(self._buffer, mode="r") as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")[:h, :w]
                decoded += 1
        if decoded != self._count:
            raise GbufError(f"video compression ({self.codec}) returned {decoded} of {self._count} frames")
