"""A small MPEG-TS writer for tests, written from ISO/IEC 13818-1 independently of
native/mpegts.pyx: PAT and PMT sections with their CRC_32 (Annex A, computed bit by bit here),
PES packets (2.4.3.6) and their transport packets (2.4.3.2) with adaptation-field stuffing and
continuity counters per PID."""

from __future__ import annotations

from dataclasses import dataclass, field

PACKET = 188
PAT_PID = 0
PMT_PID = 0x1000
VIDEO_PID, AUDIO_PID = 0x100, 0x101
H264, HEVC, AAC_ADTS = 0x1B, 0x24, 0x0F
VIDEO_ID, AUDIO_ID = 0xE0, 0xC0
TIMESTAMP_WRAP = 1 << 33


def crc32_mpeg(data: bytes) -> int:
    """Annex A CRC_32: polynomial 0x04C11DB7, MSB first, initial 0xFFFFFFFF, no final XOR."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def section(table_id: int, extension: int, body: bytes, version: int = 0) -> bytes:
    """A long-form PSI section (2.4.4.4 / 2.4.4.9) with its CRC_32."""
    length = 5 + len(body) + 4
    head = bytes([table_id, 0xB0 | length >> 8, length & 0xFF, extension >> 8, extension & 0xFF,
                  0xC1 | (version & 0x1F) << 1, 0, 0])
    data = head + body
    return data + crc32_mpeg(data).to_bytes(4, "big")


def pat_section(pmt_pid: int = PMT_PID, program: int = 1, nit_first: bool = False,
                version: int = 0) -> bytes:
    body = b""
    if nit_first:
        body += (0).to_bytes(2, "big") + (0xE000 | 0x10).to_bytes(2, "big")
    body += program.to_bytes(2, "big") + (0xE000 | pmt_pid).to_bytes(2, "big")
    return section(0x00, 1, body, version)


def pmt_section(streams: list[tuple[int, int]], program: int = 1, version: int = 0,
                es_info: bytes = b"") -> bytes:
    """streams: (pid, stream_type); es_info is given to each stream (to make long PMTs)."""
    pcr = streams[0][0] if streams else 0x1FFF
    body = (0xE000 | pcr).to_bytes(2, "big") + (0xF000).to_bytes(2, "big")
    for pid, stream_type in streams:
        body += bytes([stream_type]) + (0xE000 | pid).to_bytes(2, "big")
        body += (0xF000 | len(es_info)).to_bytes(2, "big") + es_info
    return section(0x02, program, body, version)


def timestamp(prefix: int, value: int) -> bytes:
    """2.4.3.7: a 33-bit PTS/DTS in 5 bytes with its marker bits."""
    return bytes([prefix << 4 | (value >> 29) & 0x0E | 1, (value >> 22) & 0xFF,
                  (value >> 14) & 0xFE | 1, (value >> 7) & 0xFF, (value << 1) & 0xFE | 1])


def pes(stream_id: int, payload: bytes, pts: int | None = None, dts: int | None = None,
        unbounded: bool = False) -> bytes:
    """A PES packet with the optional header; PES_packet_length 0 when unbounded (video)."""
    if pts is None:
        flags, fields = 0, b""
    elif dts is None:
        flags, fields = 0x80, timestamp(0x2, pts)
    else:
        flags, fields = 0xC0, timestamp(0x3, pts) + timestamp(0x1, dts)
    rest = bytes([0x80, flags, len(fields)]) + fields + payload
    length = 0 if unbounded else len(rest)
    assert length <= 0xFFFF
    return b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + rest


def packet(pid: int, cc: int, payload: bytes, start: bool = False, random_access: bool = False,
           discontinuity: bool = False, tei: bool = False) -> bytes:
    """One transport packet; an adaptation field is added (stuffed) when payload < 184 bytes
    or a flag needs it."""
    assert len(payload) <= 184
    head = bytes([0x47, (0x80 if tei else 0) | (0x40 if start else 0) | pid >> 8, pid & 0xFF])
    if len(payload) == 184 and not (random_access or discontinuity):
        return head + bytes([0x10 | cc]) + payload
    room = 184 - len(payload)  # adaptation_field_length byte + field
    if room == 1:
        field_bytes = b"\x00"
    else:
        flags = (0x80 if discontinuity else 0) | (0x40 if random_access else 0)
        field_bytes = bytes([room - 1, flags]) + b"\xff" * (room - 2)
    if len(field_bytes) != room:  # the flags need two bytes but only one is free
        raise ValueError("payload too long for an adaptation field")
    control = 0x30 if payload else 0x20
    return head + bytes([control | cc]) + field_bytes + payload


@dataclass
class TsWriter:
    """Packetizes sections and PES packets, keeping a continuity counter per PID."""

    counters: dict[int, int] = field(default_factory=dict)

    def _cc(self, pid: int) -> int:
        value = self.counters.get(pid, -1) + 1 & 0x0F
        self.counters[pid] = value
        return value

    def packets(self, pid: int, unit: bytes, random_access: bool = False) -> list[bytes]:
        """The packets of one payload unit (a PES, or pointer_field + sections)."""
        out = []
        pos = 0
        first = True
        while first or pos < len(unit):
            limit = 182 if first and random_access else 184
            piece = unit[pos : pos + limit]
            pos += len(piece)
            out.append(packet(pid, self._cc(pid), piece, start=first,
                              random_access=first and random_access))
            first = False
        return out

    def psi(self, pid: int, data: bytes) -> bytes:
        """A section (or several) starting in a new packet (pointer_field 0), 0xFF-stuffed."""
        unit = b"\x00" + data
        if len(unit) % 184:
            unit += b"\xff" * (184 - len(unit) % 184)
        return b"".join(self.packets(pid, unit))

    def program(self, streams: list[tuple[int, int]], version: int = 0) -> bytes:
        return self.psi(PAT_PID, pat_section()) + self.psi(PMT_PID, pmt_section(
            streams, version=version))

    def pes(self, pid: int, data: bytes, random_access: bool = False) -> bytes:
        return b"".join(self.packets(pid, data, random_access))


def av_program(writer: TsWriter, video: int = H264) -> bytes:
    return writer.program([(VIDEO_PID, video), (AUDIO_PID, AAC_ADTS)])
