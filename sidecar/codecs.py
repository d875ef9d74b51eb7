"""RFC 6381 codec strings and track descriptions derived from codec parameters."""

from __future__ import annotations

from fractions import Fraction


def annexb_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes removed)."""
    out: list[bytes] = []
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for j, s in enumerate(starts):
        stop = starts[j + 1] - 3 if j + 1 < len(starts) else len(data)
        out.append(data[s:stop].rstrip(b"\x00"))
    return [n for n in out if n]


def is_annexb(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def param_sets(codec: str, data: bytes) -> list[bytes]:
    """VPS/SPS/PPS NAL units of an Annex B access unit, first occurrence of each."""
    if not is_annexb(data):
        return []
    wanted = (7, 8) if codec == "h264" else (32, 33, 34)
    seen: list[bytes] = []
    for nal in annexb_nals(data):
        kind = nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F
        if kind in wanted and nal not in seen:
            seen.append(nal)
    return seen


def unescape(nal: bytes) -> bytes:
    """RBSP of a NAL unit: drop emulation-prevention bytes (00 00 03)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def h264_codec_string(extradata: bytes | None, first_packet: bytes | None = None) -> str:
    """``avc1.PPCCLL`` from an avcC record, or from an SPS found in Annex B data."""
    if extradata and len(extradata) >= 4 and extradata[0] == 1:
        return f"avc1.{extradata[1]:02X}{extradata[2]:02X}{extradata[3]:02X}"
    for blob in (extradata, first_packet):
        if not blob:
            continue
        for nal in annexb_nals(blob):
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
        try:
            return hevc_codec_string(extradata, first_packet)
        except ValueError:
            return "hvc1.1.6.L93.B0"  # nothing to parse yet: Main, level 3.1
    return codec


def frame_rate_string(rate: Fraction | int | None) -> str:
    """``25`` or ``30000/1001``, as DASH ``@frameRate`` writes it; empty when unknown."""
    if not rate:
        return ""
    r = Fraction(rate).limit_denominator(1001)
    return str(r.numerator) if r.denominator == 1 else f"{r.numerator}/{r.denominator}"


def hevc_codec_string(extradata: bytes | None, first_keyframe: bytes | None = None, *,
                      error: type[Exception] = ValueError) -> str:
    """``hvc1.<space><profile>.<compat>.<tier><level>.<constraints>`` (ISO/IEC 14496-15 E)."""
    extradata = extradata or b""
    ptl: bytes | None = None
    if len(extradata) >= 13 and extradata[0] == 1:  # hvcC: bytes 1..12 = general PTL
        ptl = extradata[1:13]
    else:
        for blob in (extradata, first_keyframe or b""):
            sps = next((unescape(n) for n in param_sets("hevc", blob)
                        if (n[0] >> 1) & 0x3F == 33), None)
            # SPS: 2-byte NAL header, 1 byte of vps id/sub-layers, then profile_tier_level.
            if sps is not None and len(sps) >= 15:
                ptl = sps[3:15]
                break
    if ptl is None:
        raise error("hevc track without hvcC or SPS: cannot derive its codec string")
    space = ("", "A", "B", "C")[ptl[0] >> 6]
    tier = "H" if ptl[0] & 0x20 else "L"
    profile = ptl[0] & 0x1F
    compat = int(f"{int.from_bytes(ptl[1:5], 'big'):032b}"[::-1], 2)  # bit-reversed
    constraints = list(ptl[5:11])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"hvc1.{space}{profile}", f"{compat:X}", f"{tier}{ptl[11]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)
