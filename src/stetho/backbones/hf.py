"""Backbones built on ``transformers`` modules (re-exports; one file per family).

* :mod:`stetho.backbones.wav2vec2`: ``wav2vec2``, ``wav2vec2-tiny``;
* :mod:`stetho.backbones.whisper`: ``whisper-encoder``, ``qwen-audio-encoder`` (+ tiny ones);
* :mod:`stetho.backbones._hub`: the hub client (offline mode, cache folder).
"""

from stetho.backbones.wav2vec2 import Wav2Vec2Backbone, Wav2Vec2Cfg
from stetho.backbones.whisper import (
    PAD_TO_SAMPLES,
    SAMPLE_RATE,
    QwenAudioEncoderBackbone,
    WhisperEncoderBackbone,
    WhisperEncoderCfg,
    qwen_audio_key_map,
    whisper_encoder_state_dict,
    whisper_sinusoids,
)

__all__ = [
    "PAD_TO_SAMPLES",
    "SAMPLE_RATE",
    "QwenAudioEncoderBackbone",
    "Wav2Vec2Backbone",
    "Wav2Vec2Cfg",
    "WhisperEncoderBackbone",
    "WhisperEncoderCfg",
    "qwen_audio_key_map",
    "whisper_encoder_state_dict",
    "whisper_sinusoids",
]
