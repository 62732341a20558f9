"""The engine's weight type: serve the GGUF as it is, or llama.cpp's conversion of it.

llama.cpp's CPU backend batches some weight types far better than others: Q4_0, Q5_0,
IQ4_NL and Q8_0 have fast kernels for several sequences at once (llamafile's tinyBLAS, the
AVX2/AVX-512 "repack" layouts); the bundled model's Q4_1 has none, so four sequences cost
nearly four single decodes. Q5_0 is the middle ground: a few percent of perplexity for a
faster single stream and better batching. `--weights TYPE` has the engine serve a copy of
its GGUF in TYPE, made by llama.cpp's own quantizer (`allow_requantize`) on first start and
kept in a cache directory (about a second for the bundled model; later starts reuse it).

Requantizing starts from the file's already-quantized values, so a type with fewer bits than
the source loses quality: scripts/weights_tradeoff.py measures perplexity and tokens/s for
each type side by side (README, performance).

`auto`, the default, widens a small model in an asymmetric legacy type (Q4_1, Q5_1: the
bundled model's kind, no batched CPU kernel) to BF16 when this llama.cpp build reports
AVX-512 BF16: the 16-bit copy holds the source's values rounded to BF16's 8-bit mantissa
(perplexity within 0.3% on the bundled model) and runs llama.cpp's batched BF16 kernel.
Anything else is served as it is: widening a large model would trade its single-stream
speed (memory bound) for batching. On an AVX2-only build (Dockerfile.cpu's portable one)
no copy measured pays: through the engine an F16 copy served 11% fewer tokens/s at 4
streams and 17% fewer at one than the Q4_1 file, a Q8_0 copy the same within the noise
(README, performance). If the cache cannot be written, `auto` serves the file as it is.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Final

import llama_cpp

from spillgate.engines.llamacpp.model import ContextShape, LlamaModel
from spillgate.errors import ConfigError

AS_IS: Final = "as-is"
AUTO: Final = "auto"
FILE_TYPES: Final[dict[str, int]] = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
}
CHOICES: Final = (AUTO, AS_IS, *FILE_TYPES)
# GGUF `general.file_type` of the types llama.cpp's CPU backend cannot batch (4 sequences at
# 1.16-1.41x one, README performance), with their bits per weight: Q4_1 and Q5_1.
UNBATCHED_BITS: Final[dict[int, float]] = {int(llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1): 5.0,
                                           int(llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1): 6.0}
# Largest 16-bit copy `auto` makes. SmolLM2-135M's is 258 MB; at a few GB a model's single
# stream is bound by memory bandwidth, and 3x the bytes per token would cost more than
# batching buys.
AUTO_WIDEN_MAX_BYTES: Final = 1 << 30
_HASH_CHUNK = 1 << 20
log = logging.getLogger("spillgate.engine")


def default_cache_dir() -> Path:
    """$SPILLGATE_WEIGHTS_CACHE, else $XDG_CACHE_HOME/spillgate/weights (~/.cache/…)."""
    explicit = os.environ.get("SPILLGATE_WEIGHTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spillgate" / "weights"


def prepared(source: Path, kind: str, cache_dir: Path) -> Path:
    """The GGUF to load: `source` itself for `as-is`, else its requantization to `kind`,
    made once and named by the source's content hash (a changed source file is never served
    from a stale copy)."""
    if kind == AUTO:
        return _auto(source, cache_dir)
    if kind == AS_IS:
        return source
    if kind not in FILE_TYPES:
        raise ConfigError(f"--weights: unknown type {kind!r} (one of {', '.join(CHOICES)})")
    if not source.is_file():
        raise ConfigError(f"--model-path: no GGUF file at {source}")
    target = cache_dir / f"{source.stem}.{_digest(source)}.{kind}.gguf"
    if not target.is_file():
        _requantize(source, kind, target)
    return target


def auto_choice(source: Path, *, bf16_kernel: bool | None = None,
                max_bytes: int = AUTO_WIDEN_MAX_BYTES) -> str:
    """What `auto` serves `source` as: `bf16` for a file in a type llama.cpp cannot batch
    whose 16-bit copy stays within `max_bytes`, on a build with llama.cpp's AVX-512 BF16
    kernel; else `as-is`."""
    if bf16_kernel is None:
        bf16_kernel = has_bf16_kernel()
    if not bf16_kernel or not source.is_file():
        return AS_IS
    kind = file_type(source)
    bits = None if kind is None else UNBATCHED_BITS.get(kind)
    if bits is None or source.stat().st_size * 16 / bits > max_bytes:
        return AS_IS
    return "bf16"


def has_bf16_kernel(report: bytes | None = None) -> bool:
    """Whether this llama.cpp build runs BF16 matrix products natively, by its own report
    (`llama_print_system_info`: "... | AVX512_BF16 = 1 | ...")."""
    if report is None:
        report = llama_cpp.llama_print_system_info() or b""
    return b"AVX512_BF16 = 1" in report


def file_type(path: Path) -> int | None:
    """The GGUF's `general.file_type` (llama.cpp's LLAMA_FTYPE_*), read from its metadata;
    None when the file cannot be read as a GGUF or does not say."""
    try:
        model = LlamaModel(path, ContextShape(n_ctx=256, n_seq=1, n_batch=32, n_threads=1),
                           context=False)  # the vocabulary and metadata only
    except ConfigError:
        return None
    try:
        value = model.metadata("general.file_type")
    finally:
        model.close()
    return int(value) if value is not None and value.isdigit() else None


def _auto(source: Path, cache_dir: Path) -> Path:
    choice = auto_choice(source)
    if choice == AS_IS:
        return source
    try:
        path = prepared(source, choice, cache_dir)
    except ConfigError as exc:  # the default must not stop an engine a cache cannot serve
        log.warning("weights auto: serving %s as it is (%s)", source.name, exc)
        return source
    log.info("weights auto: serving %s as %s (%s)", source.name, choice, path)
    return path


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()[:16]


def _requantize(source: Path, kind: str, target: Path) -> None:
    """Write the requantized file beside `target` and rename it into place: an engine killed
    half way, or two engines starting at once, never leave a torn file under the name."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise ConfigError(f"--weights-cache: cannot write to {target.parent}: {exc}") from exc
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FILE_TYPES[kind]
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        status = llama_cpp.llama_model_quantize(str(source).encode(), partial.encode(),
                                                ctypes.byref(params))
        if status != 0:
            raise ConfigError(f"--weights {kind}: llama.cpp could not requantize {source}")
        os.chmod(partial, 0o644)  # mkstemp's 0600 would keep the copy from other users
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
