"""Deterministic CMAF (fragmented MP4) with PyAV: one track per file, grid timestamps.

An init segment is ``ftyp + moov`` for one track (track id 1, video timescale 90 kHz, audio
timescale the sample rate). A media segment is ``styp + moof + mdat``: exactly one
fragment holding the segment's packets, ``tfdt`` = the first sample's DTS in the track
timescale, ``mfhd`` = the grid segment number. Every call is one fresh, bitexact mux, so
the bytes depend only on the codec parameters and the packets.

Muxer options (checked against libavformat/movenc.c):

* ``empty_moov`` writes ``ftyp + moov`` at header time (the init segment) and turns
  fragmentation on; with no ``frag_keyframe``/``frag_duration``/``frag_size`` the only
  fragment is flushed at the trailer, so all packets land in ONE ``moof``.
* ``default_base_moof`` (offsets relative to the moof, so the init part can be cut off),
  ``skip_sidx``, ``skip_trailer`` (no ``mfra``).
* ``frag_discont`` + ``use_editlist=0``: the first packet's DTS becomes the fragment start,
  so ``tfdt`` is the grid DTS rather than 0. ``avoid_negative_ts=disabled`` so nothing is
  rebased either.
* NOT ``cmaf`` (nor ``negative_cts_offsets``, which ``cmaf`` implies): with it movenc
  shifts DTS by the first sample's composition offset, so ``tfdt`` becomes the first
  PTS and would depend on that one sample. We keep positive offsets ``pts - dts``
  (trun version 0) and write the CMAF brands (``ftyp``) and the ``styp`` ourselves.
* ``fflags=+bitexact`` (no "Lavf" string, zero creation times), ``write_btrt=0`` and a
  zero bit rate: the bit rate a demuxer estimates differs between nodes and must not
  reach the init segment.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av

from sidecar.codecs import aac_codec_string, hevc_codec_string, is_annexb, param_sets, unescape
from sidecar.model import GridPacket, TrackInfo
from sidecar.mux import boxes
from sidecar.mux.ts import MuxError

_GRID_RATE = 90_000
_INT_MAX = 2**31 - 1
# frag_custom: fragments are cut only when asked (never), so the trailer flushes the whole
# segment as one moof. Without it, empty_moov alone makes movenc cut at every keyframe.
_MOVFLAGS = ("+empty_moov+default_base_moof+frag_discont+frag_custom+skip_sidx"
             "+skip_trailer")
_TAGS = {"h264": "avc1", "hevc": "hvc1", "aac": "mp4a", "opus": "Opus"}
_VIDEO = ("h264", "hevc")
_AUDIO = ("aac", "opus")
# CMAF header: structural brand cmfc (ISO/IEC 23000-19 7.2), iso6 (tfdt, styp), iso5
# (default-base-is-moof). Media segment: msdh (DASH media segment, no sidx so no msix),
# cmfs/cmff (a CMAF segment of one CMAF fragment).
FTYP = boxes.make_box(b"ftyp", b"iso6" + struct.pack(">I", 0) + b"iso6cmfciso5mp41")
STYP = boxes.make_box(b"styp", b"msdh" + struct.pack(">I", 0) + b"msdhcmfscmff")
# AAC sampling_frequency_index (ISO/IEC 14496-3 Table 1.18).
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
              11025, 8000, 7350)
_AAC_PROFILES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}


class Fmp4Error(MuxError):
    """A CMAF init or media segment could not be made."""


def unsupported_reason(track: TrackInfo) -> str | None:
    """None if the track can be packaged as CMAF, else a sentence saying why not."""
    if track.kind == "video":
        if track.codec in _VIDEO:
            return None
        return f"{track.codec} video cannot be packaged as CMAF (only H.264 and HEVC)"
    if track.codec in _AUDIO:
        return None
    if track.codec in ("ac3", "eac3"):
        # movenc builds dac3/dec3 from parsed packets and refuses an empty moov before them.
        return (f"{track.codec} audio cannot be packaged as CMAF here: FFmpeg's mp4 muxer "
                "cannot write its init segment before it has seen packets")
    return f"{track.codec} audio cannot be packaged as CMAF (only AAC and Opus)"


def init_segment(track: TrackInfo, *, first_keyframe: bytes | None = None) -> bytes:
    """``ftyp + moov`` for one track; identical for identical codec parameters.

    ``first_keyframe`` (a video keyframe in Annex B, or an ADTS audio frame) is used only
    when the codec parameters carry no decoder configuration (avcC/hvcC/SPS, ASC).
    """
    extradata = _extradata(track, [first_keyframe] if first_keyframe else [])
    buf, out, _ = _open(track, extradata, 1)
    try:
        out.start_encoding()
        head = buf.getvalue()
        out.close()
    except (av.FFmpegError, ValueError) as exc:
        raise Fmp4Error(f"cmaf init segment for {track.codec} failed: {exc}") from exc
    moov = [b for b in boxes.walk(head) if b.type == b"moov"]
    if len(moov) != 1:
        raise Fmp4Error("cmaf init segment: the muxer wrote no moov")
    return FTYP + head[moov[0].start : moov[0].end]


def media_segment(track: TrackInfo, packets: Sequence[GridPacket], *, number: int, start: int,
                  end: int) -> bytes:
    """One CMAF media segment (``styp + moof + mdat``) for grid segment ``number``.

    ``packets`` are this track's packets (others are ignored), in any order; ``[start,
    end)`` is the segment's span in grid ticks.
    """
    if end <= start:
        raise Fmp4Error(f"segment {number}: empty span [{start}, {end})")
    own = sorted((p for p in packets if p.track == track.index), key=lambda p: p.dts)
    if not own:
        raise Fmp4Error(f"segment {number}: no packets for track {track.index}")
    timing = _timing(track, own, start, end)
    video = track.kind == "video"
    datas = [p.data for p in own] if video else [_raw_aac(track, p.data) for p in own]
    extradata = _extradata(track, [p.data for p in own], segment=True)
    seq = number % 2**32 or 1  # mfhd: 32 bits, and 0 is not a valid sequence number
    buf, out, stream = _open(track, extradata, seq if seq <= _INT_MAX else 1)
    tb = Fraction(1, _timescale(track))
    try:
        for p, data, (pts, dts, duration) in zip(own, datas, timing, strict=True):
            pkt = av.Packet(data)
            pkt.time_base = tb
            pkt.pts = pts
            pkt.dts = dts
            pkt.duration = duration
            pkt.is_keyframe = p.keyframe
            pkt.stream = stream
            out.mux(pkt)
        out.close()
    except (av.FFmpegError, ValueError) as exc:
        raise Fmp4Error(f"cmaf segment {number} ({track.codec}) failed: {exc}") from exc
    return _fragment(buf.getvalue(), seq, number)


def codec_string(track: TrackInfo, *, first_keyframe: bytes | None = None) -> str:
    """RFC 6381 ``CODECS`` value of the CMAF track, parsed from the decoder configuration."""
    cc = track.template.codec_context if track.template is not None else None
    extradata = bytes(cc.extradata) if cc is not None and cc.extradata else b""
    if track.codec == "h264":
        return _avc_string(extradata, first_keyframe, track.codec_string)
    if track.codec == "hevc":
        return hevc_codec_string(extradata, first_keyframe, error=Fmp4Error)
    if track.codec == "aac":
        if not extradata:
            extradata = _adts_asc(first_keyframe) if first_keyframe and _is_adts(
                first_keyframe) else _asc_from_params(track)
        return aac_codec_string(extradata)
    if track.codec == "opus":
        return "Opus"
    raise Fmp4Error(unsupported_reason(track) or f"no codec string for {track.codec}")


# -- muxing ------------------------------------------------------------------------------

def _timescale(track: TrackInfo) -> int:
    if track.kind == "video":
        return _GRID_RATE
    rate = track.sample_rate or (track.template.codec_context.sample_rate
                                 if track.template is not None else 0)
    if not rate:
        raise Fmp4Error(f"{track.codec} track without a sample rate")
    return int(rate)


def _open(track: TrackInfo, extradata: bytes, fragment_index: int
          ) -> tuple[io.BytesIO, Any, Any]:
    reason = unsupported_reason(track)
    if reason:
        raise Fmp4Error(reason)
    if track.template is None:
        raise Fmp4Error(f"{track.codec} track has no codec parameters")
    options = {
        "movflags": _MOVFLAGS,
        "fflags": "+bitexact",
        "use_editlist": "0",
        "avoid_negative_ts": "disabled",
        "write_btrt": "0",
        "fragment_index": str(fragment_index),
    }
    buf = io.BytesIO()
    try:
        out = av.open(buf, "w", format="mp4", options=options)
        stream = out.add_stream_from_template(track.template)
        # movenc takes a video track's timescale from the stream time base, an audio
        # track's from the sample rate.
        stream.time_base = Fraction(1, _timescale(track))
        cc = stream.codec_context
        if track.kind == "audio":
            cc.sample_rate = _timescale(track)
        cc.bit_rate = 0  # an estimate that differs between nodes; it would reach esds
        cc.codec_tag = _TAGS[track.codec]  # hvc1, not movenc's default hev1
        cc.extradata = extradata
    except (av.FFmpegError, ValueError) as exc:
        raise Fmp4Error(f"cannot set up a cmaf mux for {track.codec}: {exc}") from exc
    return buf, out, stream


def _timing(track: TrackInfo, own: list[GridPacket], start: int, end: int
            ) -> list[tuple[int, int, int]]:
    """(pts, dts, duration) per packet in the track timescale."""
    if track.kind == "video":
        pts = [p.pts for p in own]
        dts = [p.dts for p in own]
    else:
        rate = _timescale(track)
        # Round half up in integers, the same rule for every packet: durations are the
        # differences of rounded times, so they add up without drift.
        pts = [(2 * p.pts * rate + _GRID_RATE) // (2 * _GRID_RATE) for p in own]
        dts = [(2 * p.dts * rate + _GRID_RATE) // (2 * _GRID_RATE) for p in own]
    deltas = [b - a for a, b in itertools.pairwise(dts)]
    if any(d <= 0 for d in deltas):
        raise Fmp4Error(f"{track.codec} packets with repeated or decreasing DTS")
    if track.kind == "video":
        # Make the segment's DTS span equal its grid span: with a constant reorder delay
        # the next segment's tfdt then continues exactly where this one ends.
        last = end - (start - own[0].dts) - own[-1].dts
        if last <= 0:
            last = deltas[-1] if deltas else max(own[-1].duration, 1)
    else:
        frame = track.template.codec_context.frame_size if track.template is not None else 0
        last = frame or (2 * own[-1].duration * _timescale(track) + _GRID_RATE) // (
            2 * _GRID_RATE) or (deltas[-1] if deltas else 0)
        if last <= 0:
            raise Fmp4Error(f"{track.codec} packet without a duration")
    durations = [*deltas, last]
    return list(zip(pts, dts, durations, strict=True))


def _fragment(data: bytes, seq: int, number: int) -> bytes:
    """``styp`` + the one ``moof + mdat`` of a mux, with ``mfhd`` set to ``seq``."""
    try:
        top = list(boxes.walk(data))
    except ValueError as exc:
        raise Fmp4Error(f"cmaf segment {number}: unreadable mux output: {exc}") from exc
    moofs = [b for b in top if b.type == b"moof"]
    mdats = [b for b in top if b.type == b"mdat"]
    if len(moofs) != 1 or len(mdats) != 1 or moofs[0].end != mdats[0].start:
        raise Fmp4Error(f"cmaf segment {number}: expected one moof + mdat, got "
                        f"{[b.type.decode('latin1') for b in top]}")
    frag = bytearray(data[moofs[0].start : mdats[0].end])
    mfhd = boxes.find(bytes(frag), "moof/mfhd")
    if len(mfhd) != 1:
        raise Fmp4Error(f"cmaf segment {number}: no mfhd")
    # fragment_index is an int option (1..INT_MAX): larger numbers are patched in.
    struct.pack_into(">I", frag, mfhd[0].body + 4, seq)
    return STYP + bytes(frag)


# -- decoder configuration ----------------------------------------------------------------

def _extradata(track: TrackInfo, samples: list[bytes], *, segment: bool = False) -> bytes:
    """The decoder configuration to put on the output stream.

    The template's own extradata when it has some: it is set explicitly because
    ``add_stream_from_template`` copies the template's codecpar, which can lack the
    extradata its codec context holds (the synthetic source's templates do).
    """
    cc = track.template.codec_context if track.template is not None else None
    if cc is not None and cc.extradata:
        return bytes(cc.extradata)
    if track.codec in _VIDEO:
        nals = list(dict.fromkeys(n for s in samples for n in param_sets(track.codec, s)))
        if not nals and segment and samples and is_annexb(samples[0]):
            # A segment without parameter sets (no keyframe): its moov is discarded, and
            # movenc, finding no extradata, takes the first (Annex B) sample as such and
            # still converts the samples to length-prefixed NAL units.
            return b""
        if not nals:
            raise Fmp4Error(f"{track.codec} track without SPS/PPS: pass its first keyframe "
                            "(Annex B) to build the decoder configuration")
        # movenc turns Annex B parameter sets into avcC/hvcC, and converts Annex B
        # samples to length-prefixed NAL units when the extradata is Annex B.
        return b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    if track.codec == "aac":
        if samples and _is_adts(samples[0]):
            return _adts_asc(samples[0])
        return _asc_from_params(track)
    raise Fmp4Error(f"{track.codec} track without codec extradata")


def _is_adts(data: bytes) -> bool:
    return len(data) >= 7 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0


def _adts_fields(data: bytes) -> tuple[int, int, int, int, int]:
    """(object type, frequency index, channel config, header length, frame length)."""
    aot = (data[2] >> 6) + 1
    freq = (data[2] >> 2) & 0x0F
    channels = ((data[2] & 0x01) << 2) | (data[3] >> 6)
    header = 7 if data[1] & 0x01 else 9  # protection_absent: no CRC
    length = ((data[3] & 0x03) << 11) | (data[4] << 3) | (data[5] >> 5)
    blocks = data[6] & 0x03
    if blocks:
        raise Fmp4Error("ADTS frames with several raw data blocks are not supported")
    if not channels:
        raise Fmp4Error("ADTS with a program config element (channel config 0) is not "
                        "supported")
    return aot, freq, channels, header, length


def _asc(aot: int, freq: int, channels: int) -> bytes:
    # AudioSpecificConfig + GASpecificConfig with its three flags 0 (what aac_adtstoasc
    # writes): 5 + 4 + 4 + 3 bits.
    return struct.pack(">H", (aot << 11) | (freq << 7) | (channels << 3))


def _adts_asc(data: bytes) -> bytes:
    aot, freq, channels, _, _ = _adts_fields(data)
    return _asc(aot, freq, channels)


def _asc_from_params(track: TrackInfo) -> bytes:
    cc = track.template.codec_context if track.template is not None else None
    profile = getattr(cc, "profile", None) or "LC"
    rate = _timescale(track)
    channels = track.channels or (cc.channels if cc is not None else 0)
    if profile not in _AAC_PROFILES or rate not in _AAC_RATES or not 0 < channels < 7:
        raise Fmp4Error(f"cannot build an AudioSpecificConfig for AAC {profile} {rate} Hz "
                        f"{channels} ch: pass its first ADTS frame")
    return _asc(_AAC_PROFILES[profile], _AAC_RATES.index(rate), channels)


def _raw_aac(track: TrackInfo, data: bytes) -> bytes:
    """An AAC access unit without its ADTS header (MPEG-TS input); raw frames unchanged."""
    if track.codec != "aac" or not _is_adts(data):
        return data
    _, _, _, header, length = _adts_fields(data)
    if length != len(data):
        raise Fmp4Error(f"ADTS frame of {length} bytes in a packet of {len(data)}: one "
                        "access unit per packet expected")
    return data[header:]


# -- codec strings ------------------------------------------------------------------------

def _avc_string(extradata: bytes, first_keyframe: bytes | None, fallback: str) -> str:
    if len(extradata) >= 4 and extradata[0] == 1:  # avcC
        return f"avc1.{extradata[1]:02X}{extradata[2]:02X}{extradata[3]:02X}"
    for blob in (extradata, first_keyframe or b""):
        for nal in param_sets("h264", blob):
            sps = unescape(nal)
            if nal[0] & 0x1F == 7 and len(sps) >= 4:
                return f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"
    if fallback.startswith("avc1."):
        return fallback
    raise Fmp4Error("h264 track without avcC or SPS: cannot derive its codec string")
