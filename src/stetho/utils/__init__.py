"""Small dependency-free helpers shared by every stage (configs, atomic I/O, hashing)."""

from stetho.utils.config import ConfigBase, ConfigError
from stetho.utils.io import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file

__all__ = [
    "ConfigBase",
    "ConfigError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "sha256_file",
]
