"""The exceptions that mean "the user's input is wrong", shown as one line by the CLI."""

from __future__ import annotations

from codec.errors import CodingError, FormatError
from vaezip.config import ConfigError
from vaezip.data import DataError


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used (raised by vaezip/checkpoint.py; defined here so that
    catching user errors never imports torch)."""


class ImageError(ValueError):
    """An image that vaezip cannot code (mode, size, damaged file)."""


class IntegrityError(ValueError):
    """A decode whose pixels do not match the checksum stored by the encoder."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    CodingError,
    ConfigError,
    DataError,
    FormatError,
    ImageError,
    IntegrityError,
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    OSError,
)
