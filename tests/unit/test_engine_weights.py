"""The engine's `--weights`: a requantized copy of the GGUF, made once by llama.cpp's own
quantizer and reused; the gateway's `weights` setting reaches the engine's command line."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import llama_cpp
import pytest

from spillgate.backends.registry import engine_command
from spillgate.catalog import Catalog
from spillgate.config.backends import LocalBackendSettings
from spillgate.engines.llamacpp import weights
from spillgate.engines.llamacpp.main import parse_args
from spillgate.engines.llamacpp.model import ContextShape, LlamaModel
from spillgate.errors import ConfigError
from tests.support import REPO, bundled_gguf

sys.path.insert(0, str(REPO / "scripts"))
from weights_tradeoff import perplexity  # the measurement the README reports

Q8_0_FILE_TYPE = "7"  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0, as GGUF metadata stores it
Q4_1_FILE_TYPE, BF16_FILE_TYPE = 3, 32  # LLAMA_FTYPE_MOSTLY_Q4_1, LLAMA_FTYPE_MOSTLY_BF16


def _file_type(path: Path) -> str | None:
    model = LlamaModel(path, ContextShape(n_ctx=256, n_seq=1, n_batch=32, n_threads=1),
                       context=False)
    try:
        return model.metadata("general.file_type")
    finally:
        model.close()


def test_as_is_serves_the_file_itself(tmp_path: Path) -> None:
    source = Path(bundled_gguf())
    assert weights.prepared(source, "as-is", tmp_path / "cache") == source
    assert not (tmp_path / "cache").exists()


def test_a_requantized_copy_is_made_once_and_reused(tmp_path: Path) -> None:
    source = Path(bundled_gguf())
    made = weights.prepared(source, "q8_0", tmp_path)
    assert made.parent == tmp_path and made != source
    assert _file_type(made) == Q8_0_FILE_TYPE
    assert _file_type(source) != Q8_0_FILE_TYPE
    written = made.stat().st_mtime_ns
    assert weights.prepared(source, "q8_0", tmp_path) == made
    assert made.stat().st_mtime_ns == written  # reused, not requantized again
    assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no partial file left
    assert made.stat().st_mode & 0o044 == 0o044  # other users' engines can load the copy


def test_a_different_source_gets_its_own_copy(tmp_path: Path) -> None:
    original = Path(bundled_gguf())
    copy = tmp_path / original.name
    copy.write_bytes(original.read_bytes() + b"\0" * 32)  # GGUF readers ignore trailing data
    cache = tmp_path / "cache"
    assert weights.prepared(original, "q8_0", cache) != weights.prepared(copy, "q8_0", cache)


def test_bad_types_and_unwritable_caches_are_config_errors(tmp_path: Path) -> None:
    source = Path(bundled_gguf())
    with pytest.raises(ConfigError, match="unknown type"):
        weights.prepared(source, "q2_k", tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="--weights-cache"):
        weights.prepared(source, "q8_0", blocker / "cache")


def test_auto_widens_the_bundled_q4_1_model_to_bf16_only_where_the_cpu_has_the_kernel() -> None:
    source = Path(bundled_gguf())
    assert weights.file_type(source) == Q4_1_FILE_TYPE
    assert weights.auto_choice(source, bf16_kernel=True) == "bf16"
    assert weights.auto_choice(source, bf16_kernel=False) == "as-is"


def test_auto_serves_batchable_and_large_files_as_they_are(tmp_path: Path) -> None:
    source = Path(bundled_gguf())
    q8_0 = weights.prepared(source, "q8_0", tmp_path)  # llama.cpp batches Q8_0 already
    assert weights.auto_choice(q8_0, bf16_kernel=True) == "as-is"
    # a model whose 16-bit copy (3.2x a Q4_1 file) would pass the cap: widening would slow
    # its single stream
    size = source.stat().st_size
    assert weights.auto_choice(source, bf16_kernel=True, max_bytes=size * 3) == "as-is"
    assert weights.auto_choice(source, bf16_kernel=True, max_bytes=size * 4) == "bf16"


def test_auto_serves_a_file_it_cannot_read_as_it_is(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 64)  # a header llama.cpp refuses
    assert weights.file_type(broken) is None
    assert weights.auto_choice(broken, bf16_kernel=True) == "as-is"
    assert weights.auto_choice(tmp_path / "missing.gguf", bf16_kernel=True) == "as-is"


def test_the_bf16_kernel_is_read_from_llama_cpps_own_report() -> None:
    assert weights.has_bf16_kernel(b"CPU : AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | REPACK = 1")
    assert not weights.has_bf16_kernel(b"CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1")
    assert not weights.has_bf16_kernel(b"CPU : AVX512_BF16 = 0 | AVX512 = 1")
    # A native AVX-512 build on a CPU with BF16 must say so: if llama.cpp ever words its
    # report differently, auto would quietly stop widening, and this fails instead.
    report = llama_cpp.llama_print_system_info() or b""
    cpu_flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() \
        else []
    if b"AVX512 = 1" in report and "avx512_bf16" in cpu_flags:
        assert weights.has_bf16_kernel()


def test_auto_serves_a_bf16_copy_that_keeps_the_models_quality(tmp_path: Path) -> None:
    source = Path(bundled_gguf())
    served = weights.prepared(source, "auto", tmp_path)
    if not weights.has_bf16_kernel():
        assert served == source
        pytest.skip("this llama.cpp build has no AVX-512 BF16 kernel: auto serves as-is")
    assert int(_file_type(served) or 0) == BF16_FILE_TYPE
    # the 16-bit copy holds the Q4_1 values to BF16's precision: the next-token distribution
    # over a fixed text matches the source's (perplexity within 2%: 0.998x measured; Q5_0,
    # the nearest 5-bit type, 1.059x)
    text = (REPO / "README.md").read_text()[:1500]
    assert perplexity(served, text, n_ctx=512) == pytest.approx(
        perplexity(source, text, n_ctx=512), rel=0.02)


def test_auto_falls_back_to_the_file_itself_when_the_cache_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Path(bundled_gguf())
    monkeypatch.setattr(weights, "has_bf16_kernel", lambda: True)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert weights.prepared(source, "auto", blocker / "cache") == source
    with pytest.raises(ConfigError, match="--weights-cache"):  # an explicit type still fails
        weights.prepared(source, "bf16", blocker / "cache")


def test_the_gateway_setting_offers_the_engines_choices_and_passes_them_on() -> None:
    setting = LocalBackendSettings.model_fields["weights"]
    assert typing.get_args(setting.annotation) == weights.CHOICES
    catalog = Catalog.load(REPO / "models" / "catalog.yaml")
    plain = LocalBackendSettings(name="cpu", model="smollm2")
    command = engine_command(plain, catalog)
    assert command[command.index("--weights") + 1] == "auto"
    argv = command[command.index("spillgate.engines.llamacpp") + 1:]
    assert parse_args(argv).weights == parse_args(["--model-path", "m", "--served-name",
                                                   "n"]).weights == "auto"
    tuned = LocalBackendSettings(name="cpu", model="smollm2", weights="iq4_nl")
    command = engine_command(tuned, catalog)
    assert command[command.index("--weights") + 1] == "iq4_nl"


def test_the_gateway_passes_the_refill_wait_on_to_the_engine_it_starts() -> None:
    catalog = Catalog.load(REPO / "models" / "catalog.yaml")
    for wait in (0.0, 4.0, 12.5):
        local = LocalBackendSettings(name="cpu", model="smollm2", refill_wait_ms=wait)
        command = engine_command(local, catalog)
        argv = command[command.index("spillgate.engines.llamacpp") + 1:]
        assert parse_args(argv).refill_wait_ms == wait
    with pytest.raises(ValueError, match="refill_wait_ms"):
        LocalBackendSettings(name="cpu", model="smollm2", refill_wait_ms=-1)
