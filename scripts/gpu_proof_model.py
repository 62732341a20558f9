"""Write a random-weight Llama GGUF for the GPU proof (scripts/gpu_proof.sh).

    python scripts/gpu_proof_model.py --vocab VOCAB.gguf --out model.gguf \
        [--hidden 2048 --layers 16 --ffn 5632 --heads 16 --kv-heads 4 --ctx 2048]

Nothing is downloaded: the tokenizer comes from a vocab-only GGUF shipped in the llama.cpp
sources (vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf, Llama 2's 32,000-token SPM
vocabulary) and the file is written with the gguf-py package vendored next to it (put
vendor/llama.cpp/gguf-py on PYTHONPATH). Weights are f16 random normals scaled like an
initialised network, so the text is noise but the compute per token is a real Llama's: what
matters for GPU utilization and power. The default shape is about 0.9 B parameters (1.8 GB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - the shell script sets PYTHONPATH
    sys.exit("gguf-py not importable: put vendor/llama.cpp/gguf-py on PYTHONPATH")

ARCH = "llama"
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
                  "tokenizer.ggml.add_eos_token")
CHAT_TEMPLATE = (  # ChatML: the engine renders messages with the GGUF's template
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _field_value(field: Any) -> Any:
    """A reader field's value: a scalar, a string, or a list of either."""
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def copy_tokenizer(vocab: Path, writer: Any) -> int:
    reader = gguf.GGUFReader(str(vocab))
    n_vocab = 0
    for key in TOKENIZER_KEYS:
        field = reader.fields.get(key)
        if field is None:
            continue
        value = _field_value(field)
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
            n_vocab = max(n_vocab, len(value))
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, bool(value))
        else:
            writer.add_uint32(key, int(value))
    writer.add_string("tokenizer.chat_template", CHAT_TEMPLATE)
    return n_vocab


def tensor(rng: np.random.Generator, *shape: int, scale: float) -> np.ndarray[Any, Any]:
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)


def write(args: argparse.Namespace) -> None:
    started = time.monotonic()
    writer = gguf.GGUFWriter(str(args.out), ARCH)
    n_vocab = copy_tokenizer(args.vocab, writer)
    h, f, layers = args.hidden, args.ffn, args.layers
    head_dim = h // args.heads
    writer.add_name("spillgate-gpu-proof-random")
    writer.add_context_length(args.ctx)
    writer.add_embedding_length(h)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(f)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    rng = np.random.default_rng(args.seed)
    scale = 1.0 / np.sqrt(h)
    ones = np.ones(h, dtype=np.float32)
    # gguf-py takes numpy shapes (rows, cols) = (out, in); llama.cpp reads them transposed.
    writer.add_tensor("token_embd.weight", tensor(rng, n_vocab, h, scale=0.02))
    for i in range(layers):
        kv = args.kv_heads * head_dim
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", tensor(rng, h, h, scale=scale))
        writer.add_tensor(f"blk.{i}.attn_k.weight", tensor(rng, kv, h, scale=scale))
        writer.add_tensor(f"blk.{i}.attn_v.weight", tensor(rng, kv, h, scale=scale))
        writer.add_tensor(f"blk.{i}.attn_output.weight", tensor(rng, h, h, scale=scale))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", tensor(rng, f, h, scale=scale))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", tensor(rng, f, h, scale=scale))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", tensor(rng, h, f, scale=1 / np.sqrt(f)))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", tensor(rng, n_vocab, h, scale=scale))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    params = n_vocab * h * 2 + layers * (2 * h * h + 2 * h * args.kv_heads * head_dim + 3 * h * f)
    print(f"wrote {args.out}: {params / 1e9:.2f} B parameters, "
          f"{args.out.stat().st_size / 2**30:.2f} GiB, {time.monotonic() - started:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=Path, required=True, help="vocab-only GGUF (tokenizer)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.hidden % args.heads or args.heads % args.kv_heads:
        p.error("--hidden must divide by --heads, and --heads by --kv-heads")
    write(args)


if __name__ == "__main__":
    main()
