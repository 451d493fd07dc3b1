"""Astra Tune: fine-tune language models and put them to work."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("astra-tune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
