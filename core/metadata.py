"""An artist's metadata, carried from the source file to the protected file (docs/RELIABILITY.md, "Metadata and colour").

``bench protect`` publishes a new file; by default it keeps what the artist put in the
original so that authorship survives the protection:

- **EXIF** (Artist, Copyright, camera, dates): carried with the orientation tag reset to 1,
  because intake already rotated the pixels upright (``ImageOps.exif_transpose``); a kept
  orientation would rotate the picture a second time in every viewer. The Exif IFD's
  pixel dimensions (0xA002/0xA003) are set to the saved size.
- **ICC profile**: carried as is. The pixels are protected as they are encoded in that
  profile's space (an Adobe RGB file stays Adobe RGB, numbers unchanged) and the profile
  travels with them, so the published file looks like the original. A profile that is not
  RGB (CMYK, grey) cannot describe the RGB output: such a picture is converted to sRGB
  with LittleCMS (perceptual intent) at intake and the note says so. With
  ``--strip-metadata`` nothing travels, so an embedded RGB profile is converted to sRGB
  too (otherwise the colours would shift in every colour-managed viewer).
- **XMP** (``dc:rights``, ``dc:creator``, ``xmpRights:*``): the packet is carried verbatim.
- **IPTC** (the JPEG APP13 block: 2:116 Copyright Notice, 2:80 By-line): carried verbatim
  into a JPEG output. PNG and WebP have no IPTC block; there the copyright and by-line
  fields are written into the XMP packet (``dc:rights``, ``dc:creator``) when the source
  has no XMP of its own, and the note says which it was.

Every decision lands in :attr:`SourceMetadata.notes`, which the sidecar records.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image, IptcImagePlugin, PngImagePlugin

log = logging.getLogger(__name__)

ORIENTATION = 0x0112
ARTIST = 0x013B
COPYRIGHT = 0x8298
EXIF_IFD = 0x8769
PIXEL_X, PIXEL_Y = 0xA002, 0xA003
IPTC_BYLINE, IPTC_COPYRIGHT = (2, 80), (2, 116)
#: Output formats of ``bench protect --format``: (Pillow format, file suffix).
FORMATS = {"png": ("PNG", ".png"), "webp-lossless": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg")}


@dataclass
class SourceMetadata:
    """What a source file carried, ready to be written into the protected file."""

    exif: Image.Exif | None = None
    icc_profile: bytes | None = None
    icc_description: str = ""
    icc_space: str = ""  # 'RGB', 'CMYK', 'GRAY' (the profile's colour space)
    xmp: bytes | None = None
    iptc_app13: bytes | None = None  # the raw APP13 payload of a JPEG ("Photoshop 3.0\0" ...)
    iptc_fields: dict[tuple[int, int], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def present(self) -> list[str]:
        """The kinds of metadata the source had, for notes and the sidecar summary."""
        kinds = []
        if self.exif is not None and len(self.exif):
            tags = [name for tag, name in ((ARTIST, "Artist"), (COPYRIGHT, "Copyright")) if self.exif.get(tag)]
            kinds.append("EXIF" + (f" ({', '.join(tags)})" if tags else ""))
        if self.icc_profile:
            kinds.append(f"ICC profile '{self.icc_description}'")
        if self.xmp:
            kinds.append("XMP")
        if self.iptc_fields or self.iptc_app13:
            kinds.append("IPTC")
        return kinds

    def record(self) -> dict:
        """JSON-ready facts (never the raw bytes): which fields, the copyright text itself."""
        exif: Any = self.exif or {}
        return {
            "exif": bool(exif),
            "exif_artist": _text(exif.get(ARTIST)),
            "exif_copyright": _text(exif.get(COPYRIGHT)),
            "icc_profile": self.icc_description or None,
            "icc_space": self.icc_space or None,
            "xmp_bytes": len(self.xmp) if self.xmp else 0,
            "iptc_copyright": self.iptc_fields.get(IPTC_COPYRIGHT),
            "iptc_byline": self.iptc_fields.get(IPTC_BYLINE),
            "notes": list(self.notes),
        }


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    return str(value)


def describe_profile(icc: bytes) -> tuple[str, str]:
    """``(description, colour space)`` of an ICC profile, e.g. ``('Adobe RGB (1998)', 'RGB')``."""
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return "unreadable profile", ""
    return (profile.profile_description or "unnamed profile").strip(), (profile.xcolor_space or "").strip()


def read_metadata(image: Image.Image) -> SourceMetadata:
    """EXIF, ICC, XMP and IPTC of an opened (not yet transposed) image."""
    found = SourceMetadata()
    exif = image.getexif()
    if len(exif):
        found.exif = exif
    icc = image.info.get("icc_profile")
    if icc:
        found.icc_profile = bytes(icc)
        found.icc_description, found.icc_space = describe_profile(found.icc_profile)
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if xmp:
        found.xmp = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    for marker, payload in getattr(image, "applist", []):
        if marker == "APP13" and payload.startswith(b"Photoshop 3.0\x00"):
            found.iptc_app13 = payload
    try:
        iptc = IptcImagePlugin.getiptcinfo(image) or {}  # type: ignore[arg-type]  # any opened image
    except (OSError, SyntaxError, ValueError, struct.error):
        iptc = {}
    for key in (IPTC_BYLINE, IPTC_COPYRIGHT):
        value = iptc.get(key)
        if isinstance(value, list):
            value = b"; ".join(value)
        if value:
            found.iptc_fields[key] = value.decode("utf-8", "replace")
    return found


def normalised_exif(exif: Image.Exif, width: int, height: int) -> bytes:
    """The EXIF block with orientation 1 (pixels already upright) and the saved pixel size."""
    copy = Image.Exif()
    copy.load(exif.tobytes())  # a copy: the source's block is never mutated
    exif = copy
    if exif.get(ORIENTATION) not in (None, 1):
        exif[ORIENTATION] = 1
    sub = exif.get_ifd(EXIF_IFD)
    if PIXEL_X in sub or PIXEL_Y in sub:
        sub[PIXEL_X], sub[PIXEL_Y] = width, height
    return exif.tobytes()


def xmp_from_iptc(fields: dict[tuple[int, int], str]) -> bytes:
    """A minimal XMP packet holding IPTC's copyright and by-line as ``dc:rights`` / ``dc:creator``."""
    parts = []
    if IPTC_COPYRIGHT in fields:
        rights = escape(fields[IPTC_COPYRIGHT])
        parts.append(f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{rights}</rdf:li></rdf:Alt></dc:rights>')
    if IPTC_BYLINE in fields:
        parts.append(f"<dc:creator><rdf:Seq><rdf:li>{escape(fields[IPTC_BYLINE])}</rdf:li></rdf:Seq></dc:creator>")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        + "".join(parts)
        + '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def jpeg_with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """``data`` (a JPEG) with an APPn segment inserted after its APP0/APP1 headers."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    if len(payload) + 2 > 0xFFFF:
        raise ValueError(f"an APP segment holds at most 65533 bytes, got {len(payload)}")
    position = 2
    while data[position] == 0xFF and data[position + 1] in (0xE0, 0xE1, 0xE2):  # JFIF, EXIF/XMP, ICC first
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:position] + segment + data[position:]


def encode(pixels, fmt: str, *, quality: int = 95, metadata: SourceMetadata | None = None) -> tuple[bytes, list[str]]:
    """``(file bytes, notes)``: ``(H, W, 3)`` uint8 pixels encoded as ``fmt`` with ``metadata`` carried.

    ``png``: lossless, zlib level 6 (Pillow's default). ``webp-lossless``: lossless WebP,
    exact pixels, typically 25–35 % smaller than PNG. ``jpeg``: ``quality`` with 4:4:4 chroma
    (no subsampling: halving the colour resolution would blur the perturbation's colour
    detail away on top of the quantisation); re-encoding changes pixels, so the budget is
    measured on the saved file and may exceed ``eps``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    pillow_format, _ = FORMATS[fmt]
    image = Image.fromarray(pixels, mode="RGB")
    options: dict = {}
    notes: list[str] = []
    xmp = None
    if metadata is not None:
        if metadata.exif is not None and len(metadata.exif):
            options["exif"] = normalised_exif(metadata.exif, image.width, image.height)
        if metadata.icc_profile:
            options["icc_profile"] = metadata.icc_profile
        xmp = metadata.xmp
        if metadata.iptc_fields or metadata.iptc_app13:
            if fmt == "jpeg":
                pass  # the APP13 block is inserted verbatim below
            elif xmp is None and metadata.iptc_fields:
                xmp = xmp_from_iptc(metadata.iptc_fields)
                notes.append(f"IPTC copyright/by-line written as XMP dc:rights/dc:creator ({fmt} has no IPTC block)")
            else:
                notes.append(f"IPTC block not carried ({fmt} has none); the XMP packet carries the rights")
    if fmt == "png":
        if xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
        kwargs = {}
    elif fmt == "webp-lossless":
        kwargs = {"lossless": True, "quality": 100, "method": 4, "exact": True}
        if xmp:
            options["xmp"] = xmp
    else:
        kwargs = {"quality": int(quality), "subsampling": 0, "optimize": True}
        if xmp:
            options["xmp"] = xmp
    buffer = io.BytesIO()
    image.save(buffer, format=pillow_format, **kwargs, **options)
    data = buffer.getvalue()
    if fmt == "jpeg" and metadata is not None and metadata.iptc_app13:
        data = jpeg_with_segment(data, 0xED, metadata.iptc_app13)
    return data, notes
