"""The engine's weight type: serve the GGUF as it is, or llama.cpp's requantization of it.

llama.cpp's CPU backend batches some weight types far better than others: Q4_0, Q5_0,
IQ4_NL and Q8_0 have fast kernels for several sequences at once (llamafile's tinyBLAS, the
AVX2/AVX-512 "repack" layouts); the bundled model's Q4_1 has none, so four sequences cost
nearly four single decodes. Q5_0 is the middle ground: a few percent of perplexity for a
faster single stream and better batching. `--weights TYPE` has the engine serve a copy of
its GGUF in TYPE, made by llama.cpp's own quantizer (`allow_requantize`) on first start and
kept in a cache directory (about a second for the bundled model; later starts reuse it).

Requantizing starts from the file's already-quantized values, so a type with fewer bits than
the source loses quality: scripts/weights_tradeoff.py measures perplexity and tokens/s for
each type side by side (README, performance). `as-is` is the default.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final

import llama_cpp

from spillgate.errors import ConfigError

AS_IS: Final = "as-is"
FILE_TYPES: Final[dict[str, int]] = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
}
CHOICES: Final = (AS_IS, *FILE_TYPES)
_HASH_CHUNK = 1 << 20


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
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
