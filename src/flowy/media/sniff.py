"""What kind of file some bytes are, judged from their first bytes only.

Never from a file name or what a sender claimed: uploads, run inputs and node outputs all
go through :func:`sniff_content_type`.  Unknown content is ``application/octet-stream``.
"""

from __future__ import annotations

from typing import Final

_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"%PDF-", "application/pdf"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"PK\x03\x04", "application/zip"),
)

# ISO base media ("ftyp" box) major brands that are audio-only or QuickTime.
_AUDIO_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A "})
_QUICKTIME_BRANDS: Final = frozenset({b"qt  "})

#: The usual file extension of each type :func:`sniff_content_type` can answer.
EXTENSIONS: Final[dict[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "audio/mpeg": "mp3",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
    "video/x-msvideo": "avi",
    "application/octet-stream": "bin",
}


def sniff_content_type(data: bytes) -> str:
    """The type of a file from its first bytes; never from what the sender claimed."""
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    if data[:4] == b"RIFF":
        riff = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
        return riff.get(data[8:12], "application/octet-stream")
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AUDIO_BRANDS:
            return "audio/mp4"
        if brand in _QUICKTIME_BRANDS:
            return "video/quicktime"
        return "video/mp4"
    # An MPEG audio frame without an ID3 tag: 11 sync bits, then a valid layer.
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        # Layer bits 00 with MPEG-4 sync is AAC in ADTS frames; 01-11 are MP3/MP2/MP1.
        return "audio/mpeg" if data[1] & 0x06 else "audio/aac"
    return "application/octet-stream"


def extension_for(content_type: str) -> str:
    """The usual extension (without the dot) of a content type; ``bin`` when unknown."""
    return EXTENSIONS.get(content_type, "bin")
