"""Tokenizers of each family fedmkt must align, trained here with the `tokenizers` library.

Each mirrors the tokenizer.json layout of a well-known model family (normaliser, pre-tokenizer,
model, decoder), so the canonical token text and the alignment are tested on every scheme without
downloading a model:

- byte_level_bpe: GPT-2 / Llama-3 / Qwen (`Ġ`, `Ċ`, a byte alphabet: never unknown);
- metaspace_bpe: Llama-2 / Mistral (`▁`, byte fallback `<0x0A>`, decoder Replace + ByteFallback + Fuse +
  Strip);
- unigram: T5 / ALBERT SentencePiece Unigram (`▁` through Metaspace, an `<unk>` for unseen characters);
- wordpiece: BERT, cased (`##` continuations, whitespace dropped by the pre-tokenizer, clean-up rules).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

FAMILIES = ("byte_level_bpe", "metaspace_bpe", "unigram", "wordpiece")

# A few lines in several scripts, so that every family sees non-ASCII characters in training.
SEED_TEXT = [
    "Le café naïve à Zürich coûte 3,50 € — très cher!",
    "中文分词测试：北京大学的学生。", "日本語のテキストです。", "Ελληνικά κείμενα και αριθμοί 42.",
    "Привет, как дела? Всё хорошо.", "این یک جمله فارسی است.", "Emoji: 🙂👍🏽 and ✓ marks.",
    "Tabs\tand\nnew lines,   several spaces; don't stop.",
]


def train_family(family: str, corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A fast tokenizer of `family` trained on `corpus` (plus SEED_TEXT)."""
    texts = list(corpus) + SEED_TEXT
    if family == "byte_level_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        return _wrap(tok, eos="<|endoftext|>", bos="<|endoftext|>")
    if family == "metaspace_bpe":
        tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        specials = ["<unk>", "<s>", "</s>"]
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, limit_alphabet=120, show_progress=False))
        _add_byte_tokens(tok, after=len(specials))
        return _wrap(tok, eos="</s>", bos="<s>", unk="<unk>")
    if family == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
        return _wrap(tok, eos="</s>", pad="<pad>", unk="<unk>")
    if family == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
        return _wrap(tok, eos="[SEP]", bos="[CLS]", pad="[PAD]", unk="[UNK]")
    raise ValueError(f"unknown tokenizer family {family!r}; known: {', '.join(FAMILIES)}")


def _add_byte_tokens(tok: Tokenizer, after: int) -> None:
    """Give a trained BPE the 256 `<0xNN>` tokens its byte fallback looks up (SentencePiece puts them right
    after the special tokens); the trainer does not make them."""
    spec = json.loads(tok.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    ordered = [t for t, _ in vocab[:after]] + byte_tokens + [t for t, _ in vocab[after:] if t not in byte_tokens]
    spec["model"]["vocab"] = {t: i for i, t in enumerate(ordered)}
    for added in spec["added_tokens"]:
        added["id"] = spec["model"]["vocab"][added["content"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(spec))
        rebuilt = Tokenizer.from_file(str(path))
    tok.__setstate__(rebuilt.__getstate__())


def _wrap(tok: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    names = {"eos": "eos_token", "bos": "bos_token", "pad": "pad_token", "unk": "unk_token"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{names[k]: v for k, v in special.items()})
