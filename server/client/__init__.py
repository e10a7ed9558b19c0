"""A streaming client for ``/v1/stream``: replays a video file (and audio) as a live speaker.

Frames are resampled to 25 fps and sent as JPEG (quality 80), audio as 40 ms PCM16 chunks at
16 kHz, in media-time order and paced against the wall clock; each message is stamped with the
wall-clock time at which it would have been captured live. Reactions and control messages are
received concurrently; a dropped connection can be taken over with ``resume``.

:func:`stream_file` streams and returns a :class:`StreamResult`; :func:`save` writes it as .npz;
:func:`add_stream_command` and :func:`run_stream` are the ``rapport stream`` subcommand.
"""

from server.client.command import add_stream_command, run_stream
from server.client.media import (
    CHUNK_SAMPLES,
    JPEG_QUALITY,
    MediaItem,
    capture_time,
    encode_frame,
    interleave,
    media_items,
    send_delay,
    to_pcm16,
)
from server.client.session import (
    ClientError,
    StreamResult,
    StreamSession,
    assemble,
    save,
    stream_file,
    stream_url,
)

__all__ = [
    "CHUNK_SAMPLES", "JPEG_QUALITY", "ClientError", "MediaItem", "StreamResult", "StreamSession",
    "add_stream_command", "assemble", "capture_time", "encode_frame", "interleave", "media_items",
    "run_stream", "save", "send_delay", "stream_file", "stream_url", "to_pcm16",
]  # fmt: skip
