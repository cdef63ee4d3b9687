"""Microsoft Smooth Streaming (MS-SSTR): client manifest and fragment lookup; fragments are packagers.fmp4's."""
from .manifest import (MANIFEST_CONTENT_TYPE, MANIFEST_NAME, SmoothStream, build_smooth_manifest, locate_fragment,
                       smooth_streams)

__all__ = ["MANIFEST_CONTENT_TYPE", "MANIFEST_NAME", "SmoothStream", "build_smooth_manifest", "locate_fragment",
           "smooth_streams"]
