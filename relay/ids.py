"""Random identifiers and secrets.

Every id and secret comes from `secrets` over an alphanumeric alphabet, so it is safe in a
URL path, an RTMP stream name and an SRT streamid without escaping, and carries no
information about any other id.
"""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits  # 62 symbols, ~5.95 bits each

# Lengths give: object ids ~238 bits, stream keys ~190 bits (the API promises >= 128),
# SRT passphrases 32 characters (libsrt accepts 10..79).
OBJECT_ID_LENGTH = 40
STREAM_KEY_LENGTH = 32
SRT_PASSPHRASE_LENGTH = 32
TOKEN_SECRET_LENGTH = 48


def random_token(length: int) -> str:
    """Return `length` random alphanumeric characters from the OS CSPRNG."""
    # One CSPRNG read per token, not one per character (a stop that completes thousands of
    # assets makes thousands of ids on the event loop). Bytes from 248 = 4 x 62 up are
    # dropped, so that `byte % 62` makes every symbol equally likely.
    symbols: list[str] = []
    while len(symbols) < length:
        symbols += [_ALPHABET[b % 62] for b in secrets.token_bytes(length + 8) if b < 248]
    return "".join(symbols[:length])


def new_object_id() -> str:
    """Id of a live stream, asset, playback id, simulcast target or access token."""
    return random_token(OBJECT_ID_LENGTH)


def new_stream_key() -> str:
    return random_token(STREAM_KEY_LENGTH)


def new_srt_passphrase() -> str:
    return random_token(SRT_PASSPHRASE_LENGTH)
