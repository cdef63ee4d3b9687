"""Microsoft Smooth Streaming (MS-SSTR): client manifest and fragment lookup; fragments are packagers.fmp4's."""
from .manifest import MANIFEST_CONTENT_TYPE, SmoothStream, build_smooth_manifest, locate_fragment, smooth_streams
from .names import MANIFEST_NAME

__all__ = ["MANIFEST_CONTENT_TYPE", "MANIFEST_NAME", "SmoothStream", "build_smooth_manifest", "locate_fragment",
           "smooth_streams"]
