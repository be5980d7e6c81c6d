"""AAC decoder configuration: ISO 14496-3 1.6.2.1 AudioSpecificConfig.

Read: the audio object type (with the escape to 32+), the sampling frequency (index or explicit
24-bit value), the channel configuration (or the channel elements of a program config element
when it is 0), and SBR / PS signalling, both explicit (object types 5 and 29 up front) and
backward compatible (the 0x2b7 sync extension after GASpecificConfig), since either changes the
output sampling rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.media.bitreader import BitReader
from relay.media.units import AudioConfig, Codec, MediaFormatError

#: 1.6.3.4 Table 1.18, samplingFrequencyIndex 0..12; 13 and 14 are reserved, 15 is "explicit".
SAMPLING_FREQUENCIES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
                        11025, 8000, 7350)
_EXPLICIT_FREQUENCY = 0xF

#: 1.6.3.5 Table 1.19: channels by channelConfiguration; 0 means "see the program config
#: element", None marks reserved values.
_CHANNELS: tuple[int | None, ...] = (0, 1, 2, 3, 4, 5, 6, 8, None, None, None, 7, 8, 24, 8, None)

AOT_NULL = 0
AOT_AAC_LC = 2
AOT_SBR = 5
AOT_ER_BSAC = 22
AOT_PS = 29
_AOT_ESCAPE = 31

#: Object types whose specific config is GASpecificConfig (1.6.2.1 switch).
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
#: Error-resilient GA types: epConfig follows GASpecificConfig, so the sync extension is not
#: looked for after them (SBR is never signalled that way for them in practice).
_ER_OBJECT_TYPES = frozenset({17, 19, 20, 21, 22, 23})

#: 1.6.5.1 syncExtensionType values.
_SYNC_EXTENSION_SBR = 0x2B7
_SYNC_EXTENSION_PS = 0x548


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """What Relay keeps of an AudioSpecificConfig."""

    #: The first (signalled) object type: 2 for AAC-LC, 5 / 29 for explicit HE-AAC v1 / v2.
    audio_object_type: int
    #: Sampling frequency of the core coder.
    core_sample_rate: int
    #: Output sampling frequency (the SBR rate when SBR is present).
    sample_rate: int
    #: Channels of the coded stream (channelConfiguration or the program config element).
    coded_channels: int
    sbr: bool
    ps: bool

    @property
    def channels(self) -> int:
        """Output channels: parametric stereo decodes a mono core to two channels."""
        return 2 if self.ps and self.coded_channels == 1 else self.coded_channels


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig (ISO 14496-3 1.6.2.1)."""
    r = BitReader(data, "AudioSpecificConfig")
    aot = _audio_object_type(r)
    if aot == AOT_NULL:
        raise MediaFormatError("AudioSpecificConfig: audio object type 0 (null) is not a codec")
    core_rate = _sampling_frequency(r, "samplingFrequencyIndex")
    channel_config = r.u(4)
    sample_rate = core_rate
    sbr = ps = False
    core_aot = aot
    if aot in (AOT_SBR, AOT_PS):
        # Explicit hierarchical signalling: the extension rate, then the core's object type.
        sbr, ps = True, aot == AOT_PS
        sample_rate = _sampling_frequency(r, "extensionSamplingFrequencyIndex")
        core_aot = _audio_object_type(r)
        if core_aot == AOT_ER_BSAC:
            r.skip(4)  # extensionChannelConfiguration
    channels = _CHANNELS[channel_config]
    if channels is None:
        raise MediaFormatError(
            f"AudioSpecificConfig: channelConfiguration {channel_config} is reserved"
        )
    if core_aot in _GA_OBJECT_TYPES:
        pce_channels = _skip_ga_specific_config(r, core_aot, channel_config)
        if channel_config == 0:
            channels = pce_channels
        if not sbr and core_aot not in _ER_OBJECT_TYPES and r.bits_left >= 16:
            found = _sync_extension(r)
            if found is not None:
                sample_rate, ps = found
                sbr = True
    if channels == 0:
        raise MediaFormatError(
            f"AudioSpecificConfig: no channels (channelConfiguration {channel_config}, "
            f"audio object type {core_aot})"
        )
    return AudioSpecificConfig(audio_object_type=aot, core_sample_rate=core_rate,
                               sample_rate=sample_rate, coded_channels=channels, sbr=sbr, ps=ps)


def aac_audio_config(record: bytes) -> AudioConfig:
    """Parse an AudioSpecificConfig into an `AudioConfig`."""
    asc = parse_audio_specific_config(record)
    return AudioConfig(codec=Codec.AAC, record=record, sample_rate=asc.sample_rate,
                       channels=asc.channels, codecs=f"mp4a.40.{asc.audio_object_type}")


def _audio_object_type(r: BitReader) -> int:
    """1.6.2.1 GetAudioObjectType(): 5 bits, 31 escapes to 32 + 6 more bits."""
    aot = r.u(5)
    return 32 + r.u(6) if aot == _AOT_ESCAPE else aot


def _sampling_frequency(r: BitReader, name: str) -> int:
    index = r.u(4)
    if index == _EXPLICIT_FREQUENCY:
        rate = r.u(24)
        if rate == 0:
            raise MediaFormatError(f"AudioSpecificConfig: explicit sampling frequency is 0 "
                                   f"(after {name} 15)")
        return rate
    if index >= len(SAMPLING_FREQUENCIES):
        raise MediaFormatError(f"AudioSpecificConfig: {name} {index} is reserved")
    return SAMPLING_FREQUENCIES[index]


def _skip_ga_specific_config(r: BitReader, aot: int, channel_config: int) -> int:
    """4.4.1 GASpecificConfig(); returns the channels of its program config element, if any."""
    r.skip(1)  # frameLengthFlag
    if r.flag():  # dependsOnCoreCoder
        r.skip(14)  # coreCoderDelay
    extension_flag = r.flag()
    channels = _program_config_element_channels(r) if channel_config == 0 else 0
    if aot in (6, 20):
        r.skip(3)  # layerNr
    if extension_flag:
        if aot == AOT_ER_BSAC:
            r.skip(16)  # numOfSubFrame, layer_length
        if aot in (17, 19, 20, 23):
            r.skip(3)  # aacSection/Scalefactor/SpectralDataResilienceFlag
        r.skip(1)  # extensionFlag3
    return channels


def _program_config_element_channels(r: BitReader) -> int:
    """4.4.1.1 program_config_element(): count the channels of its elements."""
    r.skip(4 + 2 + 4)  # element_instance_tag, object_type, sampling_frequency_index
    front, side, back = r.u(4), r.u(4), r.u(4)
    lfe, assoc_data, valid_cc = r.u(2), r.u(3), r.u(4)
    if r.flag():  # mono_mixdown_present
        r.skip(4)
    if r.flag():  # stereo_mixdown_present
        r.skip(4)
    if r.flag():  # matrix_mixdown_idx_present
        r.skip(3)
    channels = 0
    for _ in range(front + side + back):
        is_cpe = r.flag()
        r.skip(4)  # element tag select
        channels += 2 if is_cpe else 1
    r.skip(4 * lfe)  # lfe_element_tag_select
    channels += lfe
    r.skip(4 * assoc_data + 5 * valid_cc)
    # byte_alignment(), relative to the start of the AudioSpecificConfig (where r started).
    r.skip(-r.position % 8)
    r.skip(8 * r.u(8))  # comment_field_bytes, comment_field_data
    return channels


def _sync_extension(r: BitReader) -> tuple[int, bool] | None:
    """1.6.2.1 backward-compatible SBR signalling; (output rate, PS present) when SBR is on."""
    if r.u(11) != _SYNC_EXTENSION_SBR:
        return None
    if _audio_object_type(r) != AOT_SBR or not r.flag():  # extension AOT, sbrPresentFlag
        return None
    rate = _sampling_frequency(r, "extensionSamplingFrequencyIndex")
    ps = r.bits_left >= 12 and r.u(11) == _SYNC_EXTENSION_PS and r.flag()
    return rate, ps
