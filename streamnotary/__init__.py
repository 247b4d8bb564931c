"""streamnotary: make a Kafka stream auditable, window by window."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamnotary")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

PIPELINE_NAME = "streamnotary"
