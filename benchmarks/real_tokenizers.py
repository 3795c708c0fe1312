"""Real tokenizers of other model families, from the vocabulary-only GGUF files of llama.cpp.

The llama-cpp-python source distribution on PyPI carries llama.cpp's test vocabularies
(vendor/llama.cpp/models/ggml-vocab-*.gguf: tokens, merges, token types, no weights). We fetch it once
with `pip download --no-deps`, read the wanted files, and keep each tokenizer as tokenizer.json in the
fedmkt cache. transformers converts the families it knows (Llama-3, Qwen2, GPT-2, Llama-2 and Phi-3
SentencePiece); Command-R (byte-level BPE, 256k) and BERT (WordPiece) are rebuilt here from the GGUF's
tokens and merges with the `tokenizers` library in the layout those models publish. Set
FEDMKT_LLAMA_CPP_SDIST to an already downloaded archive to skip the download.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fedmkt.models import cache_root

VERSION = "0.3.36"
VOCABS = {  # name in the table -> llama.cpp vocabulary file
    "gpt-2": "gpt-2", "llama-3": "llama-bpe", "qwen2": "qwen2", "command-r": "command-r",
    "llama-2": "llama-spm", "phi-3": "phi-3", "bert": "bert-bge",
}


def _folder() -> Path:
    return cache_root() / "real_tokenizers" / VERSION


def load_real_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """One of VOCABS, from the cache, else converted from the llama-cpp-python sdist (once)."""
    folder = _folder() / name
    if not (folder / "tokenizer.json").is_file():
        gguf = _extract(VOCABS[name])
        tokenizer = _convert(gguf)
        tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def _extract(vocab: str) -> Path:
    target = _folder() / "gguf" / f"ggml-vocab-{vocab}.gguf"
    if target.is_file():
        return target
    given = os.environ.get("FEDMKT_LLAMA_CPP_SDIST")
    with tempfile.TemporaryDirectory() as tmp:
        if given:
            archive = Path(given)
        else:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                            f"llama-cpp-python=={VERSION}", "-d", tmp], check=True, capture_output=True)
            archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as sdist:
            for member in sdist:
                if member.name.endswith("/models/ggml-vocab-" + vocab + ".gguf"):
                    target.write_bytes(sdist.extractfile(member).read())
                    break
    if not target.is_file():
        raise FileNotFoundError(f"ggml-vocab-{vocab}.gguf is not in llama-cpp-python {VERSION}")
    return target


def _convert(gguf: Path) -> PreTrainedTokenizerFast:
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    kind = _text(fields, "tokenizer.ggml.model")
    if kind not in ("gpt2", "bert") or _text(fields, "general.architecture") in ("llama", "qwen2", "gpt2", "phi3"):
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokens = _strings(fields, "tokenizer.ggml.tokens")
    types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data]
    control = [t for t, kind_of in zip(tokens, types) if kind_of == 3]  # llama.cpp: 3 = control token
    vocab = {t: i for i, t in enumerate(tokens)}
    if kind == "gpt2":  # Command-R: byte-level BPE
        merges = [tuple(m.split(" ", 1)) for m in _strings(fields, "tokenizer.ggml.merges")]
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(control)
        ids = {k: _int(fields, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding")}
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=tokens[ids["bos"]],
                                       eos_token=tokens[ids["eos"]], pad_token=tokens[ids["padding"]])
    # llama.cpp writes WordPiece word starts as "▁word" and continuations bare; BERT's own vocabulary has
    # "word" and "##piece".
    wordpiece = [t if t in control or (t.startswith("[") and t.endswith("]")) else
                 t[1:] if t.startswith("\u2581") else "##" + t for t in tokens]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(wordpiece)}, unk_token="[UNK]"))  # bge: uncased
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", eos_token="[SEP]",
                                   pad_token="[PAD]", cls_token="[CLS]", bos_token="[CLS]", mask_token="[MASK]")


def _text(fields, key: str) -> str:
    field = fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _int(fields, key: str) -> int:
    field = fields[key]
    return int(field.parts[field.data[0]][0])


def _strings(fields, key: str) -> list[str]:
    field = fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
