"""load_audio: one decoding path for paths, bytes and file objects; max_seconds; NaN/Inf refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import AudioError, audio_info, load_audio
from tests.badinput import REFUSED, SCORED, huge_flac, write_audio_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_audio_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("case", SCORED)
def test_bytes_and_file_objects_decode_exactly_like_the_path(
    corpus: dict[str, Path], case: str
) -> None:
    path = corpus[case]
    want, rate = load_audio(path, sr=16000)
    data = path.read_bytes()
    for source in (data, bytearray(data), io.BytesIO(data)):
        got, got_rate = load_audio(source, sr=16000)
        assert got_rate == rate
        np.testing.assert_array_equal(got, want)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(load_audio(fh, sr=16000)[0], want)


def test_float_data_is_clipped_on_every_path(corpus: dict[str, Path]) -> None:
    # ×1e6 float samples: the same clipped waveform from a file and from HTTP-style bytes
    from_file, _ = load_audio(corpus["loud_float"])
    from_bytes, _ = load_audio(io.BytesIO(corpus["loud_float"].read_bytes()))
    assert np.abs(from_file).max() == 1.0
    np.testing.assert_array_equal(from_file, from_bytes)


@pytest.mark.parametrize("case", [c for c in REFUSED if c != "one_sample"])
def test_bad_files_are_refused_the_same_way_from_bytes(corpus: dict[str, Path], case: str) -> None:
    path = corpus[case]
    with pytest.raises(AudioError) as from_path:
        load_audio(path)
    assert str(path) in str(from_path.value) and REFUSED[case] in str(from_path.value)
    with pytest.raises(AudioError) as from_bytes:
        load_audio(io.BytesIO(path.read_bytes()), name="<request body>")
    assert "<request body>" in str(from_bytes.value) and REFUSED[case] in str(from_bytes.value)


def test_non_finite_message_names_file_and_frame(corpus: dict[str, Path]) -> None:
    with pytest.raises(AudioError, match=r"first at frame 5333") as err:
        load_audio(corpus["nan"])
    assert corpus["nan"].name in str(err.value)


def test_huge_duration_refused_from_the_header_before_decoding(tmp_path: Path) -> None:
    path = huge_flac(tmp_path / "bomb.flac", hours=10.0)
    assert path.stat().st_size < 100_000
    info = audio_info(path)
    assert info.seconds == pytest.approx(36000.0)
    with pytest.raises(AudioError, match=r"36000 s long.*limit of 60 s") as err:
        load_audio(io.BytesIO(path.read_bytes()), max_seconds=60)
    assert "<audio data>" in str(err.value)
    with pytest.raises(AudioError, match="limit"):
        audio_info(path, max_seconds=60)
    # without a limit the lying header is caught while decoding (memory follows the real data)
    with pytest.raises(AudioError, match=r"bomb\.flac"):
        load_audio(path)


def test_max_seconds_accepts_audio_up_to_the_limit(corpus: dict[str, Path]) -> None:
    x, _ = load_audio(corpus["good"], max_seconds=1.0)
    assert x.shape == (16000,)
    with pytest.raises(AudioError, match=r"limit of 0\.5 s"):
        load_audio(corpus["good"], max_seconds=0.5)


def test_check_samples_finds_nan_in_float_files_only(corpus: dict[str, Path]) -> None:
    audio_info(corpus["nan"])  # the header alone looks fine
    with pytest.raises(AudioError, match="not finite"):
        audio_info(corpus["nan"], check_samples=True)
    with pytest.raises(AudioError, match="not finite"):
        audio_info(corpus["inf"], check_samples=True)
    assert audio_info(corpus["loud_float"], check_samples=True).is_float
    assert not audio_info(corpus["good"], check_samples=True).is_float


def test_non_seekable_stream_is_read_whole(corpus: dict[str, Path]) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b):  # type: ignore[no-untyped-def]
            chunk = self._buf.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    want, _ = load_audio(corpus["good"])
    got, _ = load_audio(io.BufferedReader(Pipe(corpus["good"].read_bytes())))
    np.testing.assert_array_equal(got, want)


def test_bytes_source_with_wrong_extension_content(tmp_path: Path) -> None:
    # FLAC bytes decode whatever the (absent) name says: the content decides
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, np.float32), 16000, format="FLAC")
    x, sr = load_audio(buf.getvalue())
    assert (x.shape, sr) == ((1600,), 16000)
