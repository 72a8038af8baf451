"""Saved artifacts (re-exported): the folder logic lives in :mod:`stetho.utils.artifact`.

It sits in ``utils`` so that every saver (the k-NN detector and the autoencoder baseline, which
sits below the detector in the layers) publishes its folder the same way.
"""

from stetho.utils.artifact import (
    MANIFEST_NAME,
    DetectorError,
    check_replaceable,
    publish_folder,
    read_json,
    read_meta,
    verify_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "DetectorError",
    "check_replaceable",
    "publish_folder",
    "read_json",
    "read_meta",
    "verify_manifest",
]
