"""What a .vz file keeps of an image besides its pixels (format 17): PNG ancillary chunks, written back into the
PNG that decompress makes, with their place in it.

The output is always a PNG, so metadata travels in PNG's own form: a colour profile (iCCP), the colour space
chunks (sRGB, gAMA, cHRM, cICP, mDCv, cLLI), EXIF (eXIf; its orientation turns the picture in viewers), text and
XMP (tEXt, zTXt, iTXt), the pixel size (pHYs), the time (tIME) and the like. Whichever writer made the input,
these mean the same in the output, whose image data differ from the input's only in their compression.

A chunk may be kept where the PNG specification lets an editor that rewrites the image data copy it: a chunk
this module knows (KNOWN), or any other whose name marks it safe to copy (the fourth letter lower case), never a
critical one (the first letter upper case) and never one that describes the image data's bytes or the palette's
entries (NEVER: tRNS, which the pixels carry; APNG's frame chunks; hIST, whose length is the palette's).
Apple's iDOT, which points into the input's IDAT bytes, is unsafe to copy and so dropped. The reader of a .vz
applies the same rule, so that a forged file cannot write an IDAT or IEND into the PNG it makes.
"""

from __future__ import annotations

from typing import NamedTuple

# Where a chunk goes in the PNG made from the file: after IHDR (and before PLTE: the colour space chunks must be),
# before the first IDAT (after PLTE and tRNS: bKGD must be), or after the last IDAT (before IEND).
AFTER_HEADER, BEFORE_DATA, AFTER_DATA = 0, 1, 2
PLACES = (AFTER_HEADER, BEFORE_DATA, AFTER_DATA)

# Ancillary chunks of the PNG specification (third edition) and its registered extensions, whose meaning does not
# depend on how the image data are compressed.
KNOWN = frozenset({
    b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"mDCv", b"cLLI", b"sBIT", b"bKGD", b"pHYs", b"sPLT", b"eXIf",
    b"tIME", b"tEXt", b"zTXt", b"iTXt", b"oFFs", b"pCAL", b"sCAL", b"sTER", b"gIFg", b"gIFx",
})
NEVER = frozenset({b"tRNS", b"hIST", b"acTL", b"fcTL", b"fdAT"})

# Where the PNG specification puts the known chunks: before PLTE (and so right after IHDR here), after PLTE, before
# IDAT; the others anywhere. A file keeps each chunk at a place its type allows, and at most one of each of SINGLE.
BEFORE_PALETTE = frozenset({b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"mDCv", b"cLLI", b"sBIT"})
AFTER_PALETTE = frozenset({b"bKGD"})
BEFORE_IMAGE_DATA = frozenset({b"pHYs", b"sPLT", b"eXIf", b"oFFs", b"pCAL", b"sCAL", b"sTER"})
SINGLE = frozenset({b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"mDCv", b"cLLI", b"sBIT", b"bKGD", b"pHYs", b"eXIf",
                    b"tIME", b"oFFs", b"pCAL", b"sCAL", b"sTER"})
# The data length a chunk's type has in an image of each mode (PNG: by colour type)
LENGTHS = {b"bKGD": {"L": 2, "LA": 2, "RGB": 6, "RGBA": 6, "P": 1},
           b"sBIT": {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3}}

MAX_CHUNKS = 4096  # per image
MAX_CHUNK_BYTES = 2**30  # one chunk's data (a PNG's limit is 2**31 - 1; vaezip reads inputs of at most 1 GiB)


class Chunk(NamedTuple):
    place: int  # AFTER_HEADER, BEFORE_DATA or AFTER_DATA
    kind: bytes  # the chunk's four-letter type, b"iCCP"
    data: bytes


def keepable(kind: bytes) -> bool:
    """Whether a chunk of type `kind` may be kept (see the module's doc)."""
    if len(kind) != 4 or not all(65 <= c <= 90 or 97 <= c <= 122 for c in kind):
        return False
    ancillary, reserved_ok, safe_to_copy = kind[0] & 32, not kind[2] & 32, kind[3] & 32
    return bool(ancillary) and reserved_ok and kind not in NEVER and (kind in KNOWN or bool(safe_to_copy))


def places(kind: bytes) -> tuple[int, ...]:
    """The places a chunk of type `kind` may take."""
    if kind in BEFORE_PALETTE:
        return (AFTER_HEADER,)
    if kind in AFTER_PALETTE:
        return (BEFORE_DATA,)
    if kind in BEFORE_IMAGE_DATA:
        return (AFTER_HEADER, BEFORE_DATA)
    return PLACES


def problem(chunks, mode: str) -> str | None:
    """What is wrong with the chunks `chunks` ((place, type, data length), ...) of an image of `mode` as a file may
    hold them, or None."""
    chunks = list(chunks)
    if len(chunks) > MAX_CHUNKS:
        return f"{len(chunks)} metadata chunks (at most {MAX_CHUNKS})"
    seen = set()
    for place, kind, length in chunks:
        if not keepable(kind):
            return f"metadata chunk type {kind!r} is not one a file keeps"
        if place not in places(kind):
            return f"a {kind.decode()} chunk at place {place}"
        if kind in SINGLE and kind in seen:
            return f"a second {kind.decode()} chunk"
        seen.add(kind)
        if length > MAX_CHUNK_BYTES:
            return f"a {kind.decode()} chunk of {length} bytes (at most {MAX_CHUNK_BYTES})"
        if kind in LENGTHS and LENGTHS[kind].get(mode) != length:
            return f"a {kind.decode()} chunk of {length} bytes in a {mode} image"
    return None
