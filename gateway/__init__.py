"""The gateway: aiohttp app, URL grammar, store access, caches and CLI around the packaging core."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("media-gateway")
except PackageNotFoundError:  # running from a source tree without `pip install -e`
    __version__ = "0.0.0+source"
