"""Scoring new audio with a saved detector: files, folders, streams and HTTP."""
