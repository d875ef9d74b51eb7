"""RFC 6381 codec strings and track descriptions derived from codec parameters."""

from __future__ import annotations


def _annexb_nals(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    i, n = 0, len(data)
    starts: list[int] = []
    while i + 3 <= n:
        if data[i : i + 3] == b"\x00\x00\x01":
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for j, s in enumerate(starts):
        end = starts[j + 1] - 3 if j + 1 < len(starts) else n
        out.append(data[s:end].rstrip(b"\x00"))
    return out


def h264_codec_string(extradata: bytes | None, first_packet: bytes | None = None) -> str:
    """``avc1.PPCCLL`` from an avcC record, or from an SPS found in Annex B data."""
    if extradata and len(extradata) >= 4 and extradata[0] == 1:
        return f"avc1.{extradata[1]:02X}{extradata[2]:02X}{extradata[3]:02X}"
    for blob in (extradata, first_packet):
        if not blob:
            continue
        for nal in _annexb_nals(blob):
            if nal and nal[0] & 0x1F == 7 and len(nal) >= 4:
                return f"avc1.{nal[1]:02X}{nal[2]:02X}{nal[3]:02X}"
    return "avc1.64001F"


def aac_codec_string(extradata: bytes | None) -> str:
    """``mp4a.40.N`` with N the AudioSpecificConfig object type (2 = AAC-LC)."""
    if extradata:
        aot = extradata[0] >> 3
        if aot == 31 and len(extradata) >= 2:
            aot = 32 + (((extradata[0] & 0x07) << 3) | (extradata[1] >> 5))
        if aot:
            return f"mp4a.40.{aot}"
    return "mp4a.40.2"


def codec_string(codec: str, extradata: bytes | None, first_packet: bytes | None = None) -> str:
    if codec == "h264":
        return h264_codec_string(extradata, first_packet)
    if codec == "aac":
        return aac_codec_string(extradata)
    if codec == "mp3":
        return "mp4a.40.34"
    if codec == "hevc":
        return "hvc1.1.6.L93.B0"
    return codec
