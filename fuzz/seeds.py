"""Seed corpora and dictionaries for the harnesses, made from the captured vectors.

Nothing here is committed as binary: each run writes the seeds fresh from
`tests/vectors/rtmp/*.bin`, `tests/vectors/rtmp/*.amf0`, `tests/vectors/mpegts/*.ts`,
`tests/vectors/media/*.flv` (the tag bodies and decoder configuration records inside them) and
`tests/vectors/elementary/` (access units and ADTS frames as PES records), plus a few
hand-built inputs for forms no vector carries (AMF3, references, Enhanced RTMP audio and AV1,
HE-AAC, every RTMP chunk header format, HLS requests, API bodies). Dictionaries are taken from
the code's own names (commands in the session's transition table, API field names), so they
follow it.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from relay._native.rtmp_chunk import ChunkDemuxer, ChunkMuxer
from relay.api.schemas import (
    CreateLiveStreamRequest,
    CreateSimulcastTargetRequest,
    NewAssetSettings,
    UpdateLiveStreamRequest,
)
from relay.media.h264 import parse_avcc
from relay.media.hevc import parse_hvcc
from relay.rtmp import amf0
from relay.rtmp.handshake import HANDSHAKE_SIZE, ServerHandshake
from relay.rtmp.session import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
HANDSHAKE_BYTES = 1 + 2 * HANDSHAKE_SIZE

Seeds = dict[str, bytes]


# -- the vectors ---------------------------------------------------------------------------


def flv_tags(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(tag type, timestamp, body) of each tag of an FLV file (FLV 10.1 E.2, E.3)."""
    data = path.read_bytes()
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        yield tag_type, timestamp, data[pos + 11 : pos + 11 + size]
        pos += 11 + size + 4


def media_tags() -> list[tuple[str, int, int, bytes]]:
    """(file stem, type, timestamp, body): every header tag and the first frames of each
    track of every media vector, bodies cut to fit the flv harness's max_len."""
    found = []
    for path in sorted((VECTORS / "media").glob("*.flv")):
        frames = {8: 0, 9: 0}
        for tag_type, timestamp, body in flv_tags(path):
            if tag_type not in frames:
                continue
            header = (tag_type == 9 and (body[:2] == b"\x17\x00" or body[0] & 0x8F == 0x80)) \
                or (tag_type == 8 and body[:2] == b"\xaf\x00")
            if not header:
                frames[tag_type] += 1
                if frames[tag_type] > 3:
                    continue
            found.append((path.stem, tag_type, timestamp, body[:4091]))
    return found


def publish_messages() -> list[tuple[int, int, int, int, bytes]]:
    """The messages ffmpeg sent in `ffmpeg_publish_320x240.bin`, demuxed."""
    data = (VECTORS / "rtmp" / "ffmpeg_publish_320x240.bin").read_bytes()
    demuxer = ChunkDemuxer()
    demuxer.feed(data[HANDSHAKE_BYTES:])
    messages = []
    while (message := demuxer.next_message()) is not None:
        messages.append((message.csid, message.type_id, message.stream_id, message.timestamp,
                         message.payload))
    return messages


def remux(messages: list[tuple[int, int, int, int, bytes]], chunk_size: int = 128) -> bytes:
    muxer = ChunkMuxer()
    for csid, type_id, stream_id, timestamp, payload in messages:
        if type_id == 1:
            muxer.write_set_chunk_size(max(128, min(chunk_size, 65536)))
            continue
        muxer.write_message(csid, type_id, stream_id, timestamp, payload)
    return muxer.take()


# -- per harness ---------------------------------------------------------------------------


def chunk_seeds() -> Seeds:
    rtmp = VECTORS / "rtmp"
    publish = (rtmp / "ffmpeg_publish_320x240.bin").read_bytes()[HANDSHAKE_BYTES:]
    connect = (rtmp / "ffmpeg_handshake_connect.bin").read_bytes()[HANDSHAKE_BYTES:]
    head = publish[:8000]
    muxer = ChunkMuxer()
    muxer.write_message(3, 20, 0, 0, b"\x02\x00\x07connect" + bytes(200))  # fmt 0 + fmt 3
    muxer.write_message(3, 20, 0, 40, b"x" * 10)  # fmt 1
    muxer.write_message(3, 20, 0, 80, b"y" * 10)  # fmt 2
    muxer.write_message(3, 20, 0, 120, b"z" * 10)  # fmt 3 starting a message
    muxer.write_message(70, 9, 1, 0x1000000, b"v" * 300)  # 2-byte csid, extended timestamp
    muxer.write_message(400, 8, 1, 5, b"a" * 20)  # 3-byte csid
    muxer.write_set_chunk_size(4096)
    muxer.write_message(4, 9, 1, 0xFFFFFFFF, b"w" * 5000)
    muxer.write_message(2, 2, 0, 0, struct.pack(">I", 4))  # Abort Message
    muxer.write_message(2, 5, 0, 0, struct.pack(">I", 2500000))  # Window Ack Size
    forms = muxer.take()
    return {
        "publish_whole": b"\x00\x00" + head,
        "publish_small_limits": b"\x01\x00" + head,
        "publish_via_buffer_split": b"\x02\x03\x00\x06\x7f" + head,
        "connect": b"\x00\x00" + connect,
        "header_forms": b"\x00\x00" + forms,
        "header_forms_bytewise": b"\x02\x01\x00" + forms[:2000],
    }


def handshake_seeds() -> Seeds:
    ffmpeg = (VECTORS / "rtmp" / "ffmpeg_handshake_connect.bin").read_bytes()
    plain = b"\x03" + bytes(8) + bytes(range(256)) * 6 + bytes(HANDSHAKE_SIZE)
    plain = plain[: 1 + HANDSHAKE_SIZE] + bytes(HANDSHAKE_SIZE)
    # What Relay's server answers ffmpeg's digest-form C1: the client side's input.
    server = ServerHandshake(random_bytes=lambda n: (bytes(range(256)) * (n // 256 + 1))[:n])
    answer = server.receive_data(ffmpeg[:HANDSHAKE_BYTES])[:HANDSHAKE_BYTES]
    return {
        "server_ffmpeg_digest": b"\x00\x00" + ffmpeg,
        "server_plain": b"\x00\x00" + plain,
        "server_split": b"\x00\x02\x00\xff" + ffmpeg,
        "client_plain": b"\x01\x00" + plain,
        "client_digest": b"\x03\x00" + answer + b"\x02\x00\x00",
        "server_tls_hello": b"\x00\x00\x16\x03\x01\x02\x00",
        "server_rtmpe": b"\x00\x00\x06" + ffmpeg[1:HANDSHAKE_BYTES],
    }


def _f64(value: float) -> bytes:
    return struct.pack(">d", value)


AMF_FORMS = {
    "strict_array": b"\x0a\x00\x00\x00\x03\x00" + _f64(1.0)
                    + b"\x02\x00\x01a\x0a\x00\x00\x00\x01\x05",
    "date": b"\x0b" + _f64(1714979289123.0) + b"\x00\x00",
    "long_string": b"\x0c\x00\x00\x00\x02hi",
    "xml": b"\x0f\x00\x00\x00\x04<a/>",
    "typed_object": b"\x10\x00\x03Foo\x00\x01x\x00" + _f64(1.0) + b"\x00\x00\x09",
    "ecma_array": b"\x08\x00\x00\x00\x07\x00\x01k\x05\x00\x00\x09",
    # x0 = {}, x1 = {a: x0, b: x0}, then [x1, ref x1]: shared references, the building block
    # of a reference bomb (the fuzzer is rewarded for nesting them, see growth_feedback).
    "shared_references": b"\x0a\x00\x00\x00\x02\x03\x00\x01a\x03\x00\x00\x09\x00\x01b\x07"
                         b"\x00\x01\x00\x00\x09\x07\x00\x00",
    "amf3_byte_array": b"\x11\x0c\x07\x01\x02\x03",
    "amf3_integer": b"\x11\x04\xff\xff\xff\xff",
    "amf3_date": b"\x11\x08\x01" + _f64(86400000.0),
    "amf3_array_string_ref": b"\x11\x09\x05\x01\x06\x07abc\x06\x00",
    "amf3_mixed_array": b"\x11\x09\x03\x03k\x04\x05\x01\x04\x07",
    "amf3_object": b"\x11\x0a\x0b\x01\x03a\x06\x05hi\x01",
    "amf3_traits_ref": b"\x11\x09\x05\x01\x0a\x13\x07Foo\x03x\x04\x01\x0a\x01\x04\x02",
    "amf3_sealed_dynamic": b"\x11\x0a\x1b\x01\x03x\x04\x01\x03y\x06\x00\x01",
    "amf3_xml": b"\x11\x0b\x09<a/>",
}


def amf_seeds() -> Seeds:
    seeds = {"onmetadata": b"\x00" + (VECTORS / "rtmp" / "ffmpeg_onmetadata.amf0").read_bytes()}
    for index, (_, type_id, _, _, payload) in enumerate(publish_messages()):
        if type_id == 20:
            seeds[f"command_{index}"] = b"\x01" + payload
            seeds[f"command_amf3_{index}"] = b"\x02\x00" + payload
        elif type_id == 18:
            seeds[f"data_{index}"] = b"\x00" + payload
    for name, value in AMF_FORMS.items():
        seeds[f"value_{name}"] = b"\x00" + value
        seeds[f"command_with_{name}"] = b"\x01" + amf0.encode_command("x", 1.0) + value
    seeds["amf3_command"] = (b"\x02\x00\x11\x06\x0fconnect\x11\x04\x01"
                             b"\x11\x0a\x0b\x01\x07app\x06\x09live\x01")
    seeds["decode_at_offset"] = b"\x03\x05" + b"\x00\x00\x00\x00\x00" + AMF_FORMS["amf3_object"]
    return seeds


def _command(csid: int, stream_id: int, name: str, txn: float, *args: amf0.AmfValue) -> tuple[
        int, int, int, int, bytes]:
    return csid, 20, stream_id, 0, amf0.encode_command(name, txn, *args)


def session_seeds() -> Seeds:
    messages = publish_messages()
    # ffmpeg's own publish: every command, the metadata, the sequence headers, the first
    # frames (frames cut to 1 KiB, and the whole cut to fit max_len).
    ffmpeg: list[tuple[int, int, int, int, bytes]] = []
    frames = 0
    for csid, type_id, stream_id, timestamp, payload in messages:
        if type_id in (8, 9) and payload[1:2] == b"\x01":
            frames += 1
            if frames > 6:
                continue
            payload = payload[:1024]
        ffmpeg.append((csid, type_id, stream_id, timestamp, payload))
    connect = _command(3, 0, "connect", 1.0, {"app": "app", "type": "nonprivate",
                                               "flashVer": "FMLE/3.0", "tcUrl": "rtmp://h/app"})
    publish = [connect, _command(3, 0, "createStream", 2.0, None),
               _command(8, 1, "publish", 3.0, None, "key?x=1", "live")]
    tag = bytes((9,)) + (5).to_bytes(3, "big") + bytes(4) + bytes(3) + b"\x17\x01\x00\x00\x00"
    aggregate = (4, 22, 1, 100, tag + struct.pack(">I", 16) + tag + struct.pack(">I", 16))
    controls = [(2, 4, 0, 0, struct.pack(">HI", 6, 1234)),  # ping request
                (2, 5, 0, 0, struct.pack(">I", 1000)),  # window acknowledgement size
                (2, 3, 0, 0, struct.pack(">I", 1)),  # acknowledgement
                (2, 6, 0, 0, struct.pack(">IB", 1000, 2))]  # set peer bandwidth
    teardown = [_command(3, 0, "FCUnpublish", 4.0, None, "key"),
                _command(3, 0, "deleteStream", 5.0, None, 1.0)]
    metadata = (4, 18, 1, 0, amf0.encode("@setDataFrame", "onMetaData",
                                         amf0.EcmaArray({"width": 320.0})))
    amf3 = (3, 17, 0, 0, b"\x00" + amf0.encode_command("releaseStream", 2.0, None, "key"))
    return {
        "ffmpeg_publish": b"\x00\x00" + remux(ffmpeg, 4096)[:8000],
        "ffmpeg_publish_refused": b"\x01\x00" + remux(ffmpeg[:12], 4096),
        "ffmpeg_publish_via_buffer": b"\x02\x02\x10\x80" + remux(ffmpeg, 4096)[:8000],
        "controls_aggregate_teardown": b"\x00\x00" + remux(
            [*publish, *controls, metadata, aggregate, amf3, *teardown]),
        "play": b"\x00\x00" + remux([connect, _command(3, 0, "play", 2.0, None, "k")]),
        "unknown_command": b"\x00\x00" + remux([connect, _command(3, 0, "nonsense", 7.0)]),
        "wrong_app": b"\x00\x00" + remux([_command(3, 0, "connect", 1.0, {"app": "other"})]),
    }


def flv_seeds() -> Seeds:
    seeds: Seeds = {}
    for stem, tag_type, timestamp, body in media_tags():
        flag = b"\x01" if tag_type == 8 else b"\x00"
        seeds[f"{stem}_{tag_type}_{timestamp}_{len(seeds)}"] = (
            flag + struct.pack(">I", timestamp) + body)
    asc = b"\x12\x10"  # AAC-LC, 44.1 kHz, stereo
    seeds.update({
        "ex_audio_sequence_start": b"\x01\x00\x00\x00\x00\x90mp4a" + asc,
        "ex_audio_modex": b"\x01\x00\x00\x00\x00\x97\x02\x00\x00\x00\x00mp4a" + asc,
        "ex_audio_frame": b"\x01\x00\x00\x00\x00\x91mp4a\x21\x00",
        "ex_video_av1": b"\x00\x00\x00\x00\x00\x90av01\x81\x08\x0c\x00",
        "ex_video_vp9": b"\x00\x00\x00\x00\x00\x90vp09\x01\x00\x00\x00",
        "ex_video_modex": b"\x00\x00\x00\x00\x00\x97\x02\x00\x00\x00\x00hvc1\x01\x02",
        "ex_video_multitrack": b"\x00\x00\x00\x00\x00\x96\x00avc1",
        "ex_video_metadata": b"\x00\x00\x00\x00\x00\x84hvc1\x02\x00\x09colorInfo",
    })
    return seeds


def codec_seeds() -> Seeds:
    seeds: Seeds = {}
    for stem, tag_type, _, body in media_tags():
        if tag_type == 9 and body[:2] == b"\x17\x00":
            record = body[5:]
            seeds[f"{stem}_avcc"] = b"\x00" + record
            for index, sps in enumerate(parse_avcc(record).sps):
                seeds[f"{stem}_sps{index}"] = b"\x01" + sps
        elif tag_type == 9 and body[0] & 0x8F == 0x80 and body[1:5] == b"hvc1":
            record = body[5:]
            seeds[f"{stem}_hvcc"] = b"\x02" + record
            for index, sps in enumerate(parse_hvcc(record).sps):
                seeds[f"{stem}_sps{index}"] = b"\x03" + sps
        elif tag_type == 8 and body[:2] == b"\xaf\x00":
            seeds[f"{stem}_asc"] = b"\x04" + body[2:]
    seeds.update({
        "asc_he_aac": b"\x04\x2b\x92\x08\x00",  # AOT 5 (SBR), 22.05 -> 44.1 kHz
        "asc_he_aac_v2": b"\x04\xeb\x09\x88\x00",  # AOT 29 (PS)
        "asc_sync_extension": b"\x04\x13\x90\x56\xe5\x00",  # LC + backward-compatible SBR
        "asc_pce": b"\x04\x12\x00\x05\x08\x48\x00\x20\x00\xc6\x40\x01",  # channelConfig 0
        "asc_escape_explicit_rate": b"\x04\xf8\x07\x80\x00\x5d\xc0\x10",
    })
    return seeds


def _pes_record(kind: int, payload: bytes, pts: int | None = None, *,
                discontinuity: bool = False) -> bytes:
    """One record of the elementary harness (fuzz/harnesses/elementary.py)."""
    header = kind | (0x04 if pts is not None else 0) | (0x08 if discontinuity else 0)
    if pts is not None:
        payload = (pts >> 1).to_bytes(4, "big") + bytes(((pts & 1) << 7,)) + payload
    return bytes((header,)) + len(payload).to_bytes(2, "big") + payload


def elementary_seeds() -> Seeds:
    """The first access units of the elementary-stream vectors (the first holds the keyframe
    and its parameter sets), ADTS frames split across PES, program changes, and scanner
    inputs, as records of the elementary harness."""
    seeds: Seeds = {}
    directory = VECTORS / "elementary"
    for name, hevc in (("h264_320x180_30fps.h264", False), ("hevc_320x180_30fps.hevc", True)):
        stream = (directory / name).read_bytes()
        # Access units (H.264 7.4.1.2.3, H.265 7.4.2.4.4): after a picture's slices, a
        # parameter set, SEI or the next picture's first slice starts the next one.
        cuts = [0]
        seen_vcl = False
        pos = stream.find(b"\x00\x00\x00\x01", 4)
        while pos > 0 and len(cuts) < 5:
            header = stream[pos + 4]
            nal_type = (header >> 1) & 0x3F if hevc else header & 0x1F
            vcl = nal_type < 32 if hevc else 1 <= nal_type <= 5
            first_slice = stream[pos + 6] & 0x80 if hevc else stream[pos + 5] & 0x80
            prefix = nal_type in ((32, 33, 34, 39) if hevc else (6, 7, 8, 9))
            if seen_vcl and (prefix or (vcl and first_slice)):
                cuts.append(pos)
                seen_vcl = False
            seen_vcl |= vcl
            pos = stream.find(b"\x00\x00\x00\x01", pos + 4)
        records = b"".join(_pes_record(0, stream[a:b], 3000 * index)
                           for index, (a, b) in enumerate(itertools.pairwise(cuts)))
        seeds[name.replace(".", "_")] = bytes((int(hevc),)) + records
    audio = (directory / "aac_48k_stereo.aac").read_bytes()[:2000]
    seeds["aac_pes"] = b"\x00" + b"".join(
        _pes_record(1, audio[i : i + 700], 1920 * i // 300 if i % 1400 == 0 else None)
        for i in range(0, len(audio), 700))
    seeds["program_change"] = (b"\x00" + _pes_record(2, b"\x01\x00\x1b\x01\x01\x0f")
                               + _pes_record(2, b"\x01\x00\x24\x01\x01\x06"))
    seeds["scanners"] = b"\x00" + _pes_record(3, audio[:600]) + _pes_record(
        3, (directory / "h264_320x180_30fps.h264").read_bytes()[:600])
    return seeds


def _hls_state(part_target_index: int, operations: bytes, first_msn: int = 5) -> bytes:
    return (bytes((part_target_index | 0x30,)) + first_msn.to_bytes(6, "big")
            + bytes((len(operations),)) + operations)


def hls_seeds() -> Seeds:
    # start (0), independent part (5), part (1), complete (2); part target 0.5 s (index 3).
    live = _hls_state(3, bytes([0, 5, 1, 1, 1, 2, 0, 5, 1, 1, 2, 0, 5, 1]))
    no_parts = _hls_state(0, bytes([0, 2, 0, 2, 0]))
    ended = _hls_state(3, bytes([0, 5, 1, 2, 0xFC]))
    seeds = {}
    for name, query in {"msn_part": b"_HLS_msn=6&_HLS_part=2", "msn": b"_HLS_msn=7",
                        "skip": b"_HLS_msn=6&_HLS_skip=YES", "skip_v2": b"_HLS_skip=v2",
                        "part_past_end": b"_HLS_msn=5&_HLS_part=9",
                        "part_alone": b"_HLS_part=1", "encoded": b"_HLS_msn=%37&x=%ff"}.items():
        seeds[f"query_{name}"] = b"\x00" + live + query
    seeds["query_no_parts"] = b"\x00" + no_parts + b"_HLS_msn=8"
    seeds["query_ended"] = b"\x00" + ended + b"_HLS_msn=99&_HLS_part=1"
    for name in ("init-0.mp4", "6.m4s", "6.2.m4s", "7.0.m4s", "rendition.m3u8"):
        seeds[f"name_{name}"] = b"\x01" + live + name.encode()
    for value in ("gzip, deflate, br", "gzip;q=0, *;q=1", "identity", "*;q=0.5"):
        seeds[f"encoding_{value}"] = b"\x02" + live + value.encode()
    seeds["playback_id"] = b"\x03" + live + b"LiveLiveLive1"
    return seeds


def api_json_seeds() -> Seeds:
    create = {
        "playback_policy": ["public"], "playback_policies": "signed",
        "new_asset_settings": {"playback_policies": ["public"], "passthrough": "p",
                               "mp4_support": "standard", "master_access": "temporary",
                               "meta": {"title": "t", "creator_id": "c", "external_id": "e"}},
        "reconnect_window": 30.5, "use_slate_for_standard_latency": True,
        "reconnect_slate_url": "https://example.com/slate.png", "passthrough": "x",
        "audio_only": False, "reduced_latency": True, "latency_mode": "low", "test": True,
        "simulcast_targets": [{"url": "rtmp://live.example.com/app", "stream_key": "k"}],
        "max_continuous_duration": 3600, "meta": {"title": "live"},
    }
    update = {"passthrough": None, "latency_mode": "standard", "reconnect_window": 60,
              "max_continuous_duration": 60, "new_asset_settings": {"video_quality": "plus"},
              "meta": None, "reconnect_slate_url": None}
    bodies = {
        "create_everything": (0, create), "create_empty": (0, {}),
        "create_low": (0, {"latency_mode": "low", "reconnect_window": 0}),
        "update": (1, update), "update_meta": (1, {"meta": {"title": "x"}}),
        "playback_id": (2, {"policy": "signed"}), "playback_id_default": (2, {}),
        "simulcast": (3, {"url": "srt://h:6001?streamid=x", "passthrough": "p"}),
    }
    seeds = {name: bytes((op,)) + json.dumps(body).encode() for name, (op, body) in bodies.items()}
    seeds["not_json"] = b"\x00{\"playback_policy\": "
    seeds["surrogate"] = b"\x00{\"passthrough\": \"\\ud800\"}"
    return seeds


def api_query_seeds() -> Seeds:
    return {
        "streams_page": b"\x00limit=10&page=2&status=idle",
        "streams_key": b"\x00stream_key=abc&limit=1",
        "assets_page": b"\x01limit=100&page=1",
        "stream_id": b"\x02AbCdEf0123",
        "asset_id": b"\x03AbCdEf0123",
        "stream_subpath": b"\x02x/playback-ids/y",
    }


def ts_seeds() -> Seeds:
    """The heads of ffmpeg's TS vectors (PAT, PMT, the first PES), whole, split, under small
    limits, and with the faults the demuxer survives: garbage, a lost packet, a bad CRC."""
    seeds: Seeds = {}
    for path in sorted((VECTORS / "mpegts").glob("*.ts")):
        head = path.read_bytes()[: 80 * 188]
        stem = path.stem
        seeds[f"{stem}_whole"] = b"\x00\x00" + head
        seeds[f"{stem}_small_limits"] = b"\x01\x00" + head
        seeds[f"{stem}_split_views"] = b"\x02\x03\x00\xbb\x60" + head
        seeds[f"{stem}_bytewise"] = b"\x00\x01\x00" + head[: 20 * 188]
        seeds[f"{stem}_garbage"] = b"\x00\x00" + b"\x47\x00" * 3 + head[:1000] + b"\x47" \
            + head[1000:]
        seeds[f"{stem}_lost_packet"] = b"\x00\x00" + head[: 5 * 188] + head[6 * 188 :]
        bad_crc = bytearray(head)
        bad_crc[188 + 30] ^= 0xFF  # inside the PMT (the second packet)
        seeds[f"{stem}_bad_pmt"] = b"\x00\x00" + bytes(bad_crc)
    return seeds


def proxy_protocol_seeds() -> Seeds:
    nginx = {f"nginx_{path.stem}": b"\x00\x00" + path.read_bytes()
             for path in sorted((VECTORS / "proxy_protocol").glob("*.bin"))}
    v2_inet = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x11" + bytes([192, 0, 2, 7, 10, 0, 0, 1])
               + b"\xc3\x50\x07\x8f" + b"\x01\x00\x02h2" + b"\x03")
    v2_inet6 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" + bytes(range(32))
                + b"\x00\x01\x00\x02")
    return {
        **nginx,
        "tcp6": b"\x00\x00PROXY TCP6 2001:db8::1 ::1 65535 0\r\n\x03",
        "unknown": b"\x00\x00PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        "v2_inet": b"\x00\x00" + v2_inet,
        "v2_inet_bytewise": b"\x00\x01\x01" + v2_inet,
        "v2_inet6": b"\x00\x00" + v2_inet6,
        "v2_local": b"\x00\x00\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",
    }


SEEDS: dict[str, Callable[[], Seeds]] = {
    "chunk": chunk_seeds,
    "handshake": handshake_seeds,
    "amf": amf_seeds,
    "session": session_seeds,
    "ts": ts_seeds,
    "flv": flv_seeds,
    "codec": codec_seeds,
    "elementary": elementary_seeds,
    "hls": hls_seeds,
    "proxy_protocol": proxy_protocol_seeds,
    "api_json": api_json_seeds,
    "api_query": api_query_seeds,
    "canary_crash": lambda: {"boom": b"boom"},
    "canary_hang": lambda: {"hang": b"hang"},
    "canary_oom": lambda: {"grow": b"grow"},
}


# -- dictionaries (libFuzzer -dict) ---------------------------------------------------------


def _commands() -> list[bytes]:
    names = {command for _, command in TRANSITIONS}
    names |= {"_result", "_error", "onStatus", "onBWDone", "@setDataFrame", "onMetaData"}
    return [amf0.encode(name) for name in sorted(names)]


def _api_fields() -> list[bytes]:
    fields: set[str] = set()
    for model in (CreateLiveStreamRequest, UpdateLiveStreamRequest, NewAssetSettings,
                  CreateSimulcastTargetRequest):
        fields |= set(model.model_fields)
    words = [f'"{name}":'.encode() for name in sorted(fields)]
    return [*words, b"true", b"false", b"null", b'"public"', b'"signed"', b'"low"',
            b'"reduced"', b'"standard"', b"rtmp://", b"rtmps://", b"srt://", b"-0"]


#: Integers at the edges of the widths a number may be stored in (SQLite and C take 64 bits,
#: Python ints have none): where validation that checks only a lower bound breaks.
_EDGE_INTEGERS = [b"0", b"-1", b"2147483648", b"4294967296", b"9223372036854775807",
                  b"9223372036854775808", b"18446744073709551616", b"1e400"]

DICTIONARIES: dict[str, Callable[[], list[bytes]]] = {
    "amf": _commands,
    "session": _commands,
    "hls": lambda: [b"_HLS_msn=", b"_HLS_part=", b"_HLS_skip=", b"YES", b"v2", b".m4s",
                    b"init-", b".mp4", b"gzip", b";q=", b"&"],
    "api_json": lambda: [*_api_fields(), *_EDGE_INTEGERS],
    "api_query": lambda: [b"limit=", b"page=", b"status=", b"stream_key=", b"idle", b"active",
                          b"disabled", b"&", *_EDGE_INTEGERS],
    "flv": lambda: [b"avc1", b"hvc1", b"av01", b"vp09", b"mp4a"],
    "proxy_protocol": lambda: [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n",
                               b"\r\n\r\n\x00\r\nQUIT\n", b"\x21\x11", b"\x21\x21",
                               b"\x20\x00", b"65535", b"::ffff:"],
    # Sync byte, packet headers of the PAT and a payload start, PES start codes (video, audio,
    # padding), the PAT/PMT table ids with their section_syntax_indicator, stream types.
    "ts": lambda: [b"\x47", b"\x47\x40\x00\x10", b"\x47\x41\x00\x30", b"\x00\x00\x01\xe0",
                   b"\x00\x00\x01\xc0", b"\x00\x00\x01\xbe", b"\x00\xb0", b"\x02\xb0",
                   b"\x80\xc0\x0a", b"\x1b\xe1\x00", b"\x24\xe1\x00", b"\x0f\xe1\x01",
                   b"\xff\xff\xff\xff"],
}


def _dict_entry(word: bytes) -> str:
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                         for b in word) + '"'


def write(name: str, seed_dir: Path, dict_path: Path) -> bool:
    """Write `name`'s seeds into `seed_dir` (emptied first) and its dictionary to
    `dict_path`; return whether it has a dictionary."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    for old in seed_dir.iterdir():
        old.unlink()
    for seed_name, data in SEEDS[name]().items():
        (seed_dir / seed_name).write_bytes(data)
    words = DICTIONARIES.get(name)
    if words is None:
        return False
    dict_path.parent.mkdir(parents=True, exist_ok=True)
    dict_path.write_text("".join(f"{_dict_entry(w)}\n" for w in words()))
    return True
