# Declarations for fmp4.pyx: the per-frame part of the fMP4 writer, moof + mdat
# (ISO/IEC 14496-12 8.8.4 to 8.8.12, 8.1.1).
#
# This file sits at native/relay/_native/ for the reason given at the top of buffers.pxd: Cython
# finds a module's own .pxd under its full dotted name.

from cpython.buffer cimport Py_buffer
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t


# One sample as checked in the first pass, so that the second pass (the trun entries and the
# mdat copy) touches no Python object. The buffer is held from the first pass until the fragment
# is written, so neither a caller's callback nor a resize can move the bytes in between.
ctypedef struct SampleRecord:
    Py_buffer data               # the sample's bytes (PyBUF_SIMPLE view of Sample.data)
    uint32_t duration            # trun sample_duration, track timescale
    uint32_t flags               # trun sample_flags (8.8.3.1), from Sample.keyframe
    int32_t composition_offset   # trun version 1 sample_composition_time_offset (signed)


# One TrackRun as checked in the first pass: what its traf needs.
ctypedef struct RunRecord:
    uint32_t track_id                # tfhd track_ID, >= 1
    uint64_t base_media_decode_time  # tfdt version 1 baseMediaDecodeTime
    Py_ssize_t first                 # index of its first SampleRecord
    Py_ssize_t count                 # its number of samples, >= 1
    uint64_t data_size               # sum of its samples' sizes: its share of the mdat


# Read and check the samples of one run (a tuple of Sample) into records[run.first:]
# and set run.data_size. Buffers are acquired in order and *acquired counts them, also when a
# check raises, so that the caller releases exactly those.
cdef int collect_samples(tuple samples, RunRecord* run, SampleRecord* records,
                         Py_ssize_t* acquired) except -1

# Write moof + mdat for checked records into out, which holds exactly
# moof_size + 8 + data_total bytes (the caller checked that this is <= MAX_FRAGMENT_SIZE).
cdef void write_fragment(uint8_t* out, uint32_t sequence_number, const RunRecord* run_records,
                         Py_ssize_t nruns, const SampleRecord* records, Py_ssize_t moof_size,
                         uint64_t data_total) noexcept
