"""Byte scanning of MPEG-TS elementary streams: Annex-B video and ADTS audio.

Theory of operation. relay/media/ts_units.py reassembles PES payloads into access units and
decides what each becomes; the two loops that touch every payload byte live here.

- `annexb_to_length_prefixed` walks an H.264 / H.265 access unit in the Annex-B byte stream
  format (H.264 Annex B, H.265 Annex B: NAL units after 0x000001 start codes) and writes the
  ISO 14496-15 sample form: each NAL unit behind a 4-byte big-endian length. NAL unit bytes are
  copied as they are (emulation prevention bytes stay: the sample format carries NAL units, not
  RBSPs). It runs in two passes over the input: the first finds the NAL units, checks their
  headers and sums the output size; the second allocates the result bytes object at that exact
  size and copies each kept NAL unit into it, so the media bytes are copied once. NAL unit types
  named by `drop_types` are left out; those named by `copy_types` (the parameter sets) are also
  returned as separate bytes objects, the only Python objects made per NAL unit, and only for
  the few that are asked for.
- `split_adts` finds ISO 13818-7 6.2 / ISO 14496-3 1.A.2 ADTS frames in a buffer and returns
  where each frame's raw payload lies, skipping bytes that do not start a plausible header
  (resynchronisation) and stopping before a frame that is not complete yet.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memchr, memcpy

from bytesio cimport store_u32be

__all__ = [
    "ADTS_MAX_FRAME_SIZE",
    "AnnexBError",
    "LENGTH_SIZE",
    "annexb_to_length_prefixed",
    "split_adts",
]


cdef enum:
    # Bytes of the length field before each NAL unit in the output (ISO 14496-15 avcC / hvcC
    # lengthSizeMinusOne = 3): 4 bytes fit any NAL unit, 1 or 2 do not.
    _LENGTH_SIZE = 4
    # ADTS header sizes (13818-7 6.2.1): the fixed and variable headers are 56 bits; with
    # protection_absent = 0 a 16-bit crc_check follows (adts_error_check, 6.2.2).
    _ADTS_HEADER = 7
    _ADTS_HEADER_CRC = 9
    # aac_frame_length is 13 bits and counts the header: no ADTS frame is longer.
    _ADTS_MAX_FRAME = 8191
    # samplingFrequencyIndex 13 and 14 are reserved and 15 (explicit) cannot be used in ADTS.
    _ADTS_SAMPLING_INDEXES = 13

LENGTH_SIZE = _LENGTH_SIZE
ADTS_MAX_FRAME_SIZE = _ADTS_MAX_FRAME


class AnnexBError(ValueError):
    """An access unit that is not a valid Annex-B byte stream; str(exc) names what and where."""


# Where the next start code prefix (0x000001) at or after pos begins, or size if there is none.
# memchr finds the 0x01 (glibc scans 16-32 bytes per step); coded slice data has few 0x01
# bytes, so the zeros in front of each are checked rarely.
cdef inline Py_ssize_t _find_start_code(const uint8_t* p, Py_ssize_t size,
                                        Py_ssize_t pos) noexcept nogil:
    cdef const uint8_t* hit
    cdef Py_ssize_t one = pos + 2  # the 0x01 of a start code at pos
    while one < size:
        hit = <const uint8_t*>memchr(p + one, 1, <size_t>(size - one))
        if hit == NULL:
            return size
        one = hit - p
        if p[one - 1] == 0 and p[one - 2] == 0:
            return one - 2
        one += 1
    return size


# The NAL unit that starts at start ends before the next start code; trailing zero bytes
# before it are trailing_zero_8bits or a 4-byte start code's zero_byte (B.2), never part of
# the NAL unit (H.264 7.4.1 / H.265 7.4.2: its last byte is not 0x00).
cdef inline Py_ssize_t _nal_end(const uint8_t* p, Py_ssize_t start,
                                Py_ssize_t code) noexcept nogil:
    while code > start and p[code - 1] == 0:
        code -= 1
    return code


def annexb_to_length_prefixed(data, bint hevc, uint64_t drop_types, uint64_t copy_types,
                              Py_ssize_t max_nal_units):
    """Convert one Annex-B access unit to 4-byte length-prefixed NAL units.

    Returns `(sample, nal_types, copies)`: the length-prefixed NAL units in input order
    without the types whose bit is set in `drop_types` (bit n = nal_unit_type n: 5 bits for
    H.264, 6 for H.265 when `hevc`); a bit mask of every nal_unit_type present, dropped ones
    included; and a list with a copy of each NAL unit (header included) whose type is in
    `copy_types`, in input order. Empty NAL units (two start codes in a row) are skipped.

    Raises `AnnexBError` when non-zero bytes precede the first start code, there is no start
    code, a NAL unit is shorter than its header or has forbidden_zero_bit set, or there are
    more than `max_nal_units` NAL units.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _convert(<const uint8_t*>view.buf, view.len, hevc, drop_types, copy_types,
                        max_nal_units)
    finally:
        PyBuffer_Release(&view)


cdef object _convert(const uint8_t* p, Py_ssize_t size, bint hevc, uint64_t drop_types,
                     uint64_t copy_types, Py_ssize_t max_nal_units):
    cdef Py_ssize_t header_size = 2 if hevc else 1
    cdef Py_ssize_t first = _find_start_code(p, size, 0)
    cdef Py_ssize_t pos, code, start, end, length, units = 0, out_size = 0
    cdef unsigned int nal_type
    cdef uint64_t bit, types = 0
    cdef list copies = []
    cdef bytes out
    cdef uint8_t* w
    if first == size:
        raise AnnexBError(f"no start code (0x000001) in {size} bytes")
    for pos in range(first):
        if p[pos] != 0:
            raise AnnexBError(
                f"{first} bytes before the first start code, byte {pos} is 0x{p[pos]:02x} "
                "(only zero bytes may precede it)"
            )
    # Pass 1: find, check and measure.
    code = first
    while code < size:
        start = code + 3
        code = _find_start_code(p, size, start)
        end = _nal_end(p, start, code)
        length = end - start
        if length == 0:
            continue
        units += 1
        if units > max_nal_units:
            raise AnnexBError(f"more than {max_nal_units} NAL units in one access unit "
                              "(the limit MAX_NAL_UNITS)")
        if length < header_size:
            raise AnnexBError(f"NAL unit #{units} at byte {start} is {length} byte, shorter "
                              f"than its {header_size}-byte header")
        if p[start] & 0x80:
            raise AnnexBError(f"NAL unit #{units} at byte {start} has forbidden_zero_bit set "
                              f"(header byte 0x{p[start]:02x})")
        nal_type = (p[start] >> 1) & 0x3F if hevc else p[start] & 0x1F
        bit = (<uint64_t>1) << nal_type
        types |= bit
        if copy_types & bit:
            copies.append(PyBytes_FromStringAndSize(<const char*>(p + start), length))
        if not drop_types & bit:
            out_size += _LENGTH_SIZE + length
    # Pass 2: copy the kept NAL units behind their lengths, into a bytes object of exact size.
    out = PyBytes_FromStringAndSize(NULL, out_size)
    w = <uint8_t*>PyBytes_AS_STRING(out)
    code = first
    while code < size:
        start = code + 3
        code = _find_start_code(p, size, start)
        end = _nal_end(p, start, code)
        length = end - start
        if length == 0:
            continue
        nal_type = (p[start] >> 1) & 0x3F if hevc else p[start] & 0x1F
        if drop_types & ((<uint64_t>1) << nal_type):
            continue
        store_u32be(w, <unsigned int>length)
        memcpy(w + _LENGTH_SIZE, p + start, <size_t>length)
        w += _LENGTH_SIZE + length
    return out, types, copies


def split_adts(data):
    """Find the complete ADTS frames in `data` (one PES payload, or a held partial frame and
    the next payload).

    Returns `(frames, consumed, skipped)`. `frames` lists `(offset, start, end, header)` per
    frame: the frame begins at `offset`, its raw_data_block() bytes are `data[start:end]`
    (after the 7-byte header, or 9 with the CRC), and `header` packs the fixed header fields a decoder configuration needs:
    `profile << 9 | sampling_frequency_index << 5 | channel_configuration << 2 |
    number_of_raw_data_blocks_in_frame`. `consumed` is where the unused tail begins: an
    incomplete frame, or a partial header, the caller keeps for the next payload (at most
    ADTS_MAX_FRAME_SIZE bytes). `skipped` counts the bytes passed over because no valid header
    started there (corrupt or lost data); they are inside `data[:consumed]`.

    A header is taken as valid when it has the 12-bit syncword, layer 0, a samplingFrequency
    Index below 13, an aac_frame_length longer than the header itself and, when the bytes are
    there, the next frame's syncword right after the frame; the CRC is not checked (the ISO BMFF sample carries none, and a decoder checks the AAC payload itself).
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _split_adts(<const uint8_t*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef object _split_adts(const uint8_t* p, Py_ssize_t size):
    cdef list frames = []
    cdef Py_ssize_t pos = 0, skipped = 0, left, header_size, frame_length
    cdef unsigned int sampling_index, header
    cdef const uint8_t* hit
    while pos < size:
        left = size - pos
        if p[pos] != 0xFF:
            hit = <const uint8_t*>memchr(p + pos, 0xFF, <size_t>left)
            if hit == NULL:
                skipped += left
                pos = size
                break
            skipped += (hit - p) - pos
            pos = hit - p
            left = size - pos
        # syncword 0xFFF, then ID (any), layer (must be 00), protection_absent.
        if left < 2:
            break  # a lone 0xFF may be the start of the next payload's header
        if p[pos + 1] & 0xF6 != 0xF0:
            skipped += 1
            pos += 1
            continue
        header_size = _ADTS_HEADER if p[pos + 1] & 0x01 else _ADTS_HEADER_CRC
        if left < _ADTS_HEADER:
            break
        sampling_index = (p[pos + 2] >> 2) & 0x0F
        frame_length = ((<Py_ssize_t>(p[pos + 3] & 0x03) << 11) | (<Py_ssize_t>p[pos + 4] << 3)
                        | (p[pos + 5] >> 5))
        if sampling_index >= _ADTS_SAMPLING_INDEXES or frame_length <= header_size:
            skipped += 1
            pos += 1
            continue
        if frame_length > left:
            break  # complete in a later payload
        # A header inside corrupt data can look valid; frames follow one another, so when the
        # bytes after this one are here they must start the next header (what ffmpeg's ADTS
        # probe checks too). A false one costs a byte of scanning, not a bogus frame.
        if frame_length + 1 < left and (p[pos + frame_length] != 0xFF
                                        or p[pos + frame_length + 1] & 0xF6 != 0xF0):
            skipped += 1
            pos += 1
            continue
        if frame_length + 1 == left and p[pos + frame_length] != 0xFF:
            skipped += 1
            pos += 1
            continue
        header = ((<unsigned int>(p[pos + 2] >> 6) << 9) | (sampling_index << 5)
                  | (<unsigned int>(((p[pos + 2] & 0x01) << 2) | (p[pos + 3] >> 6)) << 2)
                  | (p[pos + 6] & 0x03))
        frames.append((pos, pos + header_size, pos + frame_length, header))
        pos += frame_length
    return frames, pos, skipped
