"""Exceptions raised by codec/.

Two families, both ValueError subclasses so that callers that only know "bad input" can catch ValueError:
- CodingError: a parameter or symbol that would make the entropy coder misbehave, or a bitstream that does not
  decode to a consistent result (e.g. the stack is not empty at the end).
- FormatError: a .vz file that cannot be read; one subclass per way a file can be broken, so the CLI can say
  precisely what went wrong and tests can check that each corruption is recognised as such.
"""


class CodingError(ValueError):
    """Invalid coder input (NaN, std <= 0, symbol out of range, ...) or an inconsistent bitstream."""


class FormatError(ValueError):
    """A .vz file that cannot be read. Messages are one line."""


class BadMagicError(FormatError):
    """The first 8 bytes are not the .vz magic: not a .vz file (or mangled by a text-mode transfer)."""


class UnsupportedVersionError(FormatError):
    """A format version this reader does not know."""


class TruncatedError(FormatError):
    """A length field points past the end of the input."""


class TrailingDataError(FormatError):
    """Bytes after the end of the payload checksum."""


class ChecksumError(FormatError):
    """A CRC32 does not match: the header or the payload was corrupted."""


class HeaderError(FormatError):
    """The header is not valid canonical JSON of the expected schema."""


class LimitError(FormatError):
    """A declared size exceeds a documented limit (refused before allocating anything)."""
