"""Audio front-ends as batched torch layers: Kaldi fbank (BEATs), CED mel, Whisper log-mel,
EfficientAT mel, waveform normalisation, SpecAugment and segmentation.

Import the layers from their modules, e.g. ``from stetho.frontend.kaldi import KaldiFbank``.
"""
