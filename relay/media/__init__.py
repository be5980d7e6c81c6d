"""Codec knowledge, pure and without I/O: media units, FLV tag bodies, decoder configurations.

`units` defines what flows from ingest to consumers; `flv` turns RTMP audio/video message
bodies into those units; `h264`, `hevc` and `aac` parse decoder configuration records;
`timestamps` extends RTMP's 32-bit timestamps.
"""
