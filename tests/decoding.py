"""Decode what the app serves with PyAV (FFmpeg), as a client's player would."""

import io

import av
import numpy as np


def decode(data: bytes, fmt: str | None = None, rate: int = 24000) -> tuple[str, int, np.ndarray]:
    """Codec name, sample rate and float mono samples of encoded audio.

    `fmt` "pcm" reads raw 16-bit mono at `rate`; other formats are recognised from their bytes (a
    streamed FLAC has no length, which libsndfile refuses).
    """
    raw = {"sample_rate": str(rate), "ch_layout": "mono"} if fmt == "pcm" else {}
    with av.open(io.BytesIO(data), format="s16le" if fmt == "pcm" else None, options=raw) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="flt", layout="mono")
        pieces, out_rate = [], None
        for frame in container.decode(stream):
            out_rate = frame.sample_rate
            pieces += [f.to_ndarray().reshape(-1) for f in to_float.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in to_float.resample(None)]
        name = stream.codec_context.name
    return name, out_rate, np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
