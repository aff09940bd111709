"""X-ray file readers: DICOM, PNG and JPEG into one float32 [0, 1] image, plus DICOM headers without PHI.

    xray = read_xray("view1_frontal.dcm")       # XRay(pixels float32 (h, w) in [0, 1], meta dict)
    sniff_format("file")                        # "dicom" | "png" | "jpeg" | other/"unknown" from content
    dicom_header("file.dcm")                    # {keyword: value text}, PHI_KEYWORDS removed

Every unreadable file raises chexcft.errors.UnreadableImageError naming the file and the reason.
"""

from chexcft.io._common import XRay
from chexcft.io.phi import PHI_KEYWORDS, is_phi
from chexcft.io.reader import DEFAULT_MAX_PIXELS, dicom_header, read_xray
from chexcft.io.sniff import SUPPORTED_FORMATS, sniff_format

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PHI_KEYWORDS",
    "SUPPORTED_FORMATS",
    "XRay",
    "dicom_header",
    "is_phi",
    "read_xray",
    "sniff_format",
]
