"""fMP4 media fragments: one moof and one mdat (ISO/IEC 14496-12 8.8, 8.1.1), written per part.

Theory of operation. This is the part of the CMAF writer that runs for every frame; the init
segment, written once per stream, is Python (relay/hls/fmp4.py). media_fragment() works in two
passes over the caller's TrackRuns:

1. Collect: read each run's track id and decode time and each sample's duration, keyframe flag,
   composition offset and data (as a held Py_buffer, no copy) into C records, range-checking
   every value that has a fixed-width field, so that a bad value raises ValueError before
   anything is written. From the counts and sizes the exact fragment size follows:

       moof   8 + mfhd 16 + per run: traf 8 + tfhd 16 + tfdt 20 + trun (20 + 16 * samples)
       mdat   8 + the samples' bytes

2. Write: allocate the result bytes object at that exact size and fill it front to back from the
   records: box headers, the trun entries, then each sample's bytes into the mdat. No Python
   object is touched in this pass, and the media bytes are copied once, straight into the
   returned object. (An exact-size allocation replaces the house's growable WriteBuf here: the
   size is known before writing, and a WriteBuf would cost a second copy into the bytes.)

Every traf uses default-base-is-moof (8.8.7.1), so each trun's data_offset counts from the
first byte of the moof; runs' data follow one another in the mdat in the order given.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport INT32_MAX, INT32_MIN, int32_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from bytesio cimport store_u32be

__all__ = ["MAX_FRAGMENT_SIZE", "media_fragment"]


cdef enum:
    # Box types as big-endian 32-bit codes (14496-12 4.2 "type" is four printable bytes).
    FOURCC_MOOF = 0x6D6F6F66  # 'moof', 8.8.4
    FOURCC_MFHD = 0x6D666864  # 'mfhd', 8.8.5
    FOURCC_TRAF = 0x74726166  # 'traf', 8.8.6
    FOURCC_TFHD = 0x74666864  # 'tfhd', 8.8.7
    FOURCC_TFDT = 0x74666474  # 'tfdt', 8.8.12
    FOURCC_TRUN = 0x7472756E  # 'trun', 8.8.8
    FOURCC_MDAT = 0x6D646174  # 'mdat', 8.1.1

    # Fixed box sizes: a box header is size + type (8 bytes), a full box adds version + flags.
    BOX_HEADER_SIZE = 8
    MFHD_SIZE = 16       # full box + sequence_number
    TFHD_SIZE = 16       # full box + track_ID (no optional fields)
    TFDT_SIZE = 20       # full box + 64-bit baseMediaDecodeTime (version 1)
    TRUN_FIXED_SIZE = 20 # full box + sample_count + data_offset
    TRUN_ENTRY_SIZE = 16 # sample_duration, sample_size, sample_flags, composition offset
    TRAF_FIXED_SIZE = BOX_HEADER_SIZE + TFHD_SIZE + TFDT_SIZE + TRUN_FIXED_SIZE

    # 8.8.7.1 tfhd flags: default-base-is-moof, and nothing else (no defaults are set, so the
    # trun carries every sample's values and the trex defaults never apply).
    TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
    # 8.8.8.1 trun flags: data-offset-present (0x1), sample-duration-present (0x100),
    # sample-size-present (0x200), sample-flags-present (0x400),
    # sample-composition-time-offsets-present (0x800).
    TRUN_FLAGS = 0x000F01

    # 8.8.3.1 sample_flags: is_leading(2) sample_depends_on(2) sample_is_depended_on(2)
    # sample_has_redundancy(2) sample_padding_value(3) sample_is_non_sync_sample(1)
    # sample_degradation_priority(16), under 4 reserved bits. A keyframe "does not depend on
    # others" (depends_on = 2) and is a sync sample; any other frame "depends on others"
    # (depends_on = 1) and is non-sync. Players (and ffmpeg's demuxer) seek on these bits.
    SAMPLE_FLAGS_SYNC = 0x02000000
    SAMPLE_FLAGS_NON_SYNC = 0x01010000

    # Largest fragment written: every trun data_offset is a signed 32-bit offset from the moof
    # (8.8.8.2), and a fragment this size also keeps the mdat's 32-bit size field (no
    # largesize). A live HLS part or segment is megabytes; this bound only stops a runaway caller.
    FRAGMENT_SIZE_MAX = 0x7FFFFFFF

MAX_FRAGMENT_SIZE = FRAGMENT_SIZE_MAX


cdef inline uint8_t* put_box_header(uint8_t* p, uint32_t size, uint32_t fourcc) noexcept nogil:
    # 14496-12 4.2 Box: 32-bit size (header included), then the type.
    store_u32be(p, size)
    store_u32be(p + 4, fourcc)
    return p + 8


cdef inline uint8_t* put_full_box_header(uint8_t* p, uint32_t size, uint32_t fourcc,
                                         uint8_t version, uint32_t flags) noexcept nogil:
    # 14496-12 4.2 FullBox: the box header, then version (8 bits) and flags (24 bits).
    put_box_header(p, size, fourcc)
    store_u32be(p + 8, (<uint32_t>version << 24) | (flags & 0xFFFFFF))
    return p + 12


cdef inline void store_u64be(uint8_t* p, uint64_t value) noexcept nogil:
    store_u32be(p, <uint32_t>(value >> 32))
    store_u32be(p + 4, <uint32_t>value)


cdef long long checked_field(object value, str what, long long low, long long high) except? -1:
    # Range-check an int for a fixed-width field: ValueError naming the field and the value
    # (TypeError for a non-integer, as a float would otherwise be truncated). The per-sample
    # callers test the value inline first and come here, formatting `what`, only to raise.
    cdef int overflow = 0
    cdef long long number
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number < low or number > high:
        raise ValueError(f"{what} must be {low}..{high}, got {value}")
    return number


cdef str sample_name(Py_ssize_t index, uint32_t track_id):
    return f"sample {index} of the run for track {track_id}"


cdef int collect_samples(tuple samples, RunRecord* run, SampleRecord* records,
                         Py_ssize_t* acquired) except -1:
    cdef Py_ssize_t i
    cdef SampleRecord* record
    cdef object sample, value
    cdef int overflow = 0
    cdef long long number
    cdef uint64_t data_size = 0
    for i in range(run.count):
        sample = samples[i]
        record = &records[run.first + i]

        # Each field is read once; the int paths avoid any formatting unless a check fails.
        value = sample.duration
        number = PyLong_AsLongLongAndOverflow(value, &overflow) if isinstance(value, int) else -1
        if overflow != 0 or number < 0 or number > 0xFFFFFFFF:
            checked_field(value, f"{sample_name(i, run.track_id)}: duration", 0, 0xFFFFFFFF)
        record.duration = <uint32_t>number

        value = sample.composition_offset
        number = (PyLong_AsLongLongAndOverflow(value, &overflow) if isinstance(value, int)
                  else <long long>INT32_MIN - 1)
        if overflow != 0 or number < INT32_MIN or number > INT32_MAX:
            checked_field(value, f"{sample_name(i, run.track_id)}: composition_offset "
                          "(trun version 1 holds a signed 32-bit offset)", INT32_MIN, INT32_MAX)
        record.composition_offset = <int32_t>number

        record.flags = SAMPLE_FLAGS_SYNC if sample.keyframe else SAMPLE_FLAGS_NON_SYNC

        PyObject_GetBuffer(sample.data, &record.data, PyBUF_SIMPLE)
        acquired[0] += 1
        if <uint64_t>record.data.len > 0xFFFFFFFF:
            raise ValueError(f"{sample_name(i, run.track_id)} is {record.data.len} bytes; "
                             "a trun sample_size holds at most 4294967295")
        data_size += <uint64_t>record.data.len
    run.data_size = data_size
    return 0


cdef void write_fragment(uint8_t* out, uint32_t sequence_number, const RunRecord* run_records,
                         Py_ssize_t nruns, const SampleRecord* records, Py_ssize_t moof_size,
                         uint64_t data_total) noexcept:
    cdef uint8_t* p = out
    cdef const RunRecord* run
    cdef const SampleRecord* record
    cdef Py_ssize_t r, i
    cdef uint64_t data_offset = <uint64_t>moof_size + BOX_HEADER_SIZE
    cdef uint32_t traf_size

    # 8.8.4 moof, 8.8.5 mfhd.
    p = put_box_header(p, <uint32_t>moof_size, FOURCC_MOOF)
    p = put_full_box_header(p, MFHD_SIZE, FOURCC_MFHD, 0, 0)
    store_u32be(p, sequence_number)
    p += 4
    for r in range(nruns):
        run = &run_records[r]
        traf_size = <uint32_t>(TRAF_FIXED_SIZE + TRUN_ENTRY_SIZE * run.count)
        # 8.8.6 traf; 8.8.7 tfhd with only the track id.
        p = put_box_header(p, traf_size, FOURCC_TRAF)
        p = put_full_box_header(p, TFHD_SIZE, FOURCC_TFHD, 0, TFHD_DEFAULT_BASE_IS_MOOF)
        store_u32be(p, run.track_id)
        p += 4
        # 8.8.12 tfdt version 1: the 64-bit decode time of the run's first sample.
        p = put_full_box_header(p, TFDT_SIZE, FOURCC_TFDT, 1, 0)
        store_u64be(p, run.base_media_decode_time)
        p += 8
        # 8.8.8 trun version 1 (signed composition offsets), every per-sample field present.
        p = put_full_box_header(p, <uint32_t>(TRUN_FIXED_SIZE + TRUN_ENTRY_SIZE * run.count),
                                FOURCC_TRUN, 1, TRUN_FLAGS)
        store_u32be(p, <uint32_t>run.count)
        store_u32be(p + 4, <uint32_t>data_offset)  # < 2**31 (MAX_FRAGMENT_SIZE): a valid int32
        p += 8
        for i in range(run.first, run.first + run.count):
            record = &records[i]
            store_u32be(p, record.duration)
            store_u32be(p + 4, <uint32_t>record.data.len)
            store_u32be(p + 8, record.flags)
            store_u32be(p + 12, <uint32_t>record.composition_offset)  # two's complement
            p += 16
        data_offset += run.data_size

    # 8.1.1 mdat: every run's sample bytes, in run order.
    p = put_box_header(p, <uint32_t>(BOX_HEADER_SIZE + data_total), FOURCC_MDAT)
    for r in range(nruns):
        run = &run_records[r]
        for i in range(run.first, run.first + run.count):
            record = &records[i]
            if record.data.len > 0:
                memcpy(p, record.data.buf, <size_t>record.data.len)
                p += record.data.len


def media_fragment(sequence_number, runs):
    """moof (mfhd, a traf per run: tfhd, tfdt version 1, trun version 1) + one mdat, as bytes.

    `runs` is a sequence of TrackRun-like objects (track_id, base_media_decode_time, samples);
    each sample has duration, keyframe, composition_offset and data (any bytes-like object).
    Raises ValueError, naming the value, for anything that would not fit its field or would make
    a corrupt fragment: no runs, a run without samples, two runs for one track, track id 0,
    a negative duration, a sample over 4 GiB, a fragment over MAX_FRAGMENT_SIZE bytes.
    """
    cdef uint32_t sequence = <uint32_t>checked_field(
        sequence_number, "sequence_number (mfhd, 32 bits)", 0, 0xFFFFFFFF)
    # Tuples, so that the items stay put (and alive) whatever a caller's object does while its
    # fields are read; for a tuple argument this is the same object.
    cdef tuple run_seq = tuple(runs)
    cdef Py_ssize_t nruns = len(run_seq)
    cdef list sample_seqs = []
    cdef RunRecord* run_records = NULL
    cdef SampleRecord* records = NULL
    cdef Py_ssize_t acquired = 0
    cdef Py_ssize_t total_samples = 0
    cdef Py_ssize_t r, other, count, moof_size, fragment_size
    cdef uint64_t data_total = 0
    cdef object run, value
    cdef tuple samples
    cdef bytes result = None

    if nruns == 0:
        raise ValueError("media_fragment needs at least one TrackRun, got none")
    run_records = <RunRecord*>PyMem_Malloc(<size_t>nruns * sizeof(RunRecord))
    if run_records == NULL:
        raise MemoryError()
    try:
        # Runs first, so that the sample records can be allocated at once.
        for r in range(nruns):
            run = run_seq[r]
            run_records[r].track_id = <uint32_t>checked_field(
                run.track_id, f"runs[{r}].track_id (tfhd, 1-based)", 1, 0xFFFFFFFF)
            for other in range(r):
                if run_records[other].track_id == run_records[r].track_id:
                    raise ValueError(
                        f"runs[{other}] and runs[{r}] are both for track "
                        f"{run_records[r].track_id}; give each track one run per fragment")
            value = run.base_media_decode_time
            if not isinstance(value, int):
                raise TypeError(f"runs[{r}].base_media_decode_time must be an int, got "
                                f"{type(value).__name__} {value!r}")
            if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
                raise ValueError(f"runs[{r}].base_media_decode_time (tfdt version 1, 64 bits) "
                                 f"must be 0..{0xFFFFFFFFFFFFFFFF}, got {value}")
            run_records[r].base_media_decode_time = PyLong_AsUnsignedLongLong(value)
            samples = tuple(run.samples)
            count = len(samples)
            if count == 0:
                raise ValueError(f"runs[{r}] (track {run_records[r].track_id}) has no samples; "
                                 "leave the track out of this fragment instead")
            run_records[r].first = total_samples
            run_records[r].count = count
            total_samples += count
            sample_seqs.append(samples)

        records = <SampleRecord*>PyMem_Malloc(<size_t>total_samples * sizeof(SampleRecord))
        if records == NULL:
            raise MemoryError()
        for r in range(nruns):
            collect_samples(sample_seqs[r], &run_records[r], records, &acquired)
            data_total += run_records[r].data_size

        moof_size = BOX_HEADER_SIZE + MFHD_SIZE + nruns * TRAF_FIXED_SIZE \
            + total_samples * TRUN_ENTRY_SIZE
        if <uint64_t>moof_size + BOX_HEADER_SIZE + data_total > FRAGMENT_SIZE_MAX:
            raise ValueError(
                f"the fragment would be {<uint64_t>moof_size + BOX_HEADER_SIZE + data_total} "
                f"bytes, over MAX_FRAGMENT_SIZE ({FRAGMENT_SIZE_MAX}, the reach of trun's "
                "signed 32-bit data_offset); cut it into smaller fragments")
        fragment_size = moof_size + BOX_HEADER_SIZE + <Py_ssize_t>data_total

        result = PyBytes_FromStringAndSize(NULL, fragment_size)
        write_fragment(<uint8_t*>PyBytes_AS_STRING(result), sequence, run_records, nruns,
                       records, moof_size, data_total)
        return result
    finally:
        for r in range(acquired):
            PyBuffer_Release(&records[r].data)
        PyMem_Free(records)
        PyMem_Free(run_records)
