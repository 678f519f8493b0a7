"""Real ``transformers`` tokenizers built offline from a word list.

Diffusion pipelines need a CLIP tokenizer (byte-level BPE) and a T5 tokenizer (SentencePiece
Unigram). The released vocabularies (49 408 and 32 100 tokens) can only be downloaded from a
model hub, so this module builds small, *real* tokenizers of the same classes in-process:

* :func:`build_clip_tokenizer` -> :class:`transformers.CLIPTokenizer`, a byte-level BPE with
  CLIP's normalizer (NFC + whitespace squeeze + lowercase), CLIP's pre-tokenizer regex, ``</w>``
  end-of-word suffix and ``<|startoftext|>`` / ``<|endoftext|>`` specials as the last two ids,
  exactly like ``openai/clip-vit-large-patch14``. Every word of the vocabulary is one token;
  any other text falls back to smaller merges, then to the 256 byte symbols, so nothing is ever
  unknown.
* :func:`build_t5_tokenizer` -> :class:`transformers.T5TokenizerFast` (in transformers 5 this is
  an alias of ``T5Tokenizer``), a Unigram model with T5's layout: ``<pad>=0``, ``</s>=1``,
  ``<unk>=2``, ``▁=3``, then the pieces, then ``<extra_id_99> ... <extra_id_0>``. Every word
  (and its capitalised form) is one ``▁word`` piece; other words are spelled from single-character
  pieces; characters outside the vocabulary map to ``<unk>`` (as in the real T5, which has no
  byte fallback).

Both survive ``save_pretrained`` -> ``from_pretrained(folder, local_files_only=True)`` with
identical ids and offsets, and both return offsets (``return_offsets_mapping=True``).

Example:
    >>> from workbench.models.tokenizers import build_clip_tokenizer, build_t5_tokenizer
    >>> clip = build_clip_tokenizer()
    >>> clip.tokenize("a red circle on the left")
    ['a</w>', 'red</w>', 'circle</w>', 'on</w>', 'the</w>', 'left</w>']
    >>> t5 = build_t5_tokenizer()
    >>> t5.tokenize("a red circle on the left")
    ['▁a', '▁red', '▁circle', '▁on', '▁the', '▁left']
"""

from __future__ import annotations

import functools
import heapq
import string
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import (
    BertTokenizer,
    CLIPTokenizer,
    GemmaTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Tokenizer,
    T5TokenizerFast,
)

__all__ = [
    "CAPTION_WORDS",
    "SHAPES_WORDS",
    "CHARACTERS",
    "DEFAULT_WORDS",
    "build_clip_tokenizer",
    "build_t5_tokenizer",
    "build_qwen2_tokenizer",
    "build_gemma_tokenizer",
    "build_bert_tokenizer",
    "tokenize_words",
]

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

#: Everyday caption words (COCO-style captions and typical text-to-image prompts).
CAPTION_WORDS: tuple[str, ...] = tuple(
    """
    a an the this that these those some many several one two three four five six seven eight nine ten
    and or but with without of in on at by for from to into onto over under above below behind
    beside near next between inside outside through across around along up down out off front back
    is are was were be been being has have had do does it its they them their he she his her him
    there here very more most few each other another all both no not only just also as than then
    photo photograph picture image painting drawing sketch illustration render portrait landscape
    close view scene background foreground style art digital oil watercolor cartoon anime realistic
    detailed high quality beautiful cute old new young little huge tall short long wide narrow
    man woman person people boy girl child children baby men women group crowd family friends player
    dog dogs cat cats horse horses cow sheep bird birds fish elephant giraffe zebra bear lion tiger
    car cars bus truck train plane airplane boat bike bicycle motorcycle street road city town
    building house home room kitchen bathroom bedroom table chair bed couch sofa window door wall
    floor tree trees grass flower flowers field forest mountain mountains hill sky cloud clouds sun
    moon water river lake sea ocean beach sand snow rain park garden food pizza cake sandwich apple
    apples banana bananas orange oranges plate bowl cup glass bottle phone computer laptop book
    clock umbrella bag hat shirt dress tie ball kite frisbee skateboard surfboard skis wave
    sitting standing walking running playing holding eating riding looking flying lying wearing
    carrying parked covered filled made made full empty open closed together alone large small
    black brown gray grey pink gold silver dark light bright colorful wooden metal stone
    day night morning evening sunset sunny cloudy snowy
    """.split()
)

#: The synthetic "shapes world": colours, shapes, positions, sizes and glue words.
SHAPES_WORDS: tuple[str, ...] = tuple(
    """
    red green blue yellow magenta cyan orange white purple black
    circle square triangle cross diamond star shape shapes
    left right top bottom centre center middle upper lower corner
    small large big tiny medium
    a an the and on at in of with letter digit number word text written
    """.split()
)

#: Single characters: letters A-Z a-z, digits 0-9, quotes and ASCII punctuation.
CHARACTERS: tuple[str, ...] = tuple(
    string.ascii_uppercase + string.ascii_lowercase + string.digits + string.punctuation
)

#: The default word list: captions + shapes world + characters, deduplicated, order kept.
DEFAULT_WORDS: tuple[str, ...] = tuple(dict.fromkeys(CAPTION_WORDS + SHAPES_WORDS + CHARACTERS))


def _word_list(words: Iterable[str] | None) -> tuple[str, ...]:
    """Deduplicate a word list (keeping order); ``None`` means :data:`DEFAULT_WORDS`."""
    if words is None:
        return DEFAULT_WORDS
    if isinstance(words, str):
        raise TypeError("`words` must be an iterable of words, not a single string; use text.split()")
    out = tuple(dict.fromkeys(w.strip() for w in words if w and w.strip()))
    if not out:
        raise ValueError("`words` is empty")
    return out


# ---------------------------------------------------------------------------------------------
# CLIP: byte-level BPE
# ---------------------------------------------------------------------------------------------

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"

# Copied from transformers' CLIPTokenizer so that the merges are learned on exactly the
# pre-tokens the tokenizer will see at inference time.
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _clip_pipeline(model: BPE) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tok


def _learn_bpe_merges(pieces: dict[str, int], end_of_word: str = "</w>") -> list[tuple[str, str]]:
    """Learn BPE merges on pre-tokenised ``pieces`` (piece -> frequency) until none is left.

    The classic algorithm (Sennrich et al.): repeatedly merge the most frequent adjacent pair, the
    last symbol of each piece carrying the ``end_of_word`` suffix (CLIP's ``</w>``; GPT-2-style
    tokenizers such as Qwen's mark word starts with a ``Ġ`` space symbol instead, and pass ""). Ties are broken by the pair's text so
    the result is identical in every process (``tokenizers``' own trainer breaks ties in hash-map
    order, which changes from run to run and would change the token ids).
    """
    seqs = [list(p[:-1]) + [p[-1] + end_of_word] for p in pieces]
    freqs = list(pieces.values())
    pair_count: dict[tuple[str, str], int] = {}
    pair_words: dict[tuple[str, str], set[int]] = {}

    def count(i: int, sign: int) -> list[tuple[str, str]]:
        changed = []
        for pair in zip(seqs[i], seqs[i][1:]):
            pair_count[pair] = pair_count.get(pair, 0) + sign * freqs[i]
            if sign > 0:
                pair_words.setdefault(pair, set()).add(i)
            changed.append(pair)
        return changed

    for i in range(len(seqs)):
        count(i, +1)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    done: set[tuple[str, str]] = set()
    while heap:
        neg, pair = heapq.heappop(heap)
        if pair in done or pair_count.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale heap entry, or a pair already merged that re-formed later
        done.add(pair)
        merges.append(pair)
        a, b = pair
        touched: set[tuple[str, str]] = set()
        for i in sorted(pair_words.pop(pair, ())):
            touched.update(count(i, -1))
            seq, out, j = seqs[i], [], 0
            while j < len(seq):
                if j + 1 < len(seq) and seq[j] == a and seq[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
            touched.update(count(i, +1))
        for p in sorted(touched - done):  # re-queue every pair whose count changed
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
    return merges


@functools.lru_cache(maxsize=8)
def _clip_vocab_and_merges(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn BPE merges on ``words`` and lay the vocabulary out like CLIP's.

    Layout: 256 byte symbols, the same 256 with ``</w>``, one token per merge (in merge order),
    then ``<|startoftext|>`` and ``<|endoftext|>`` (the last two ids, as in the real CLIP).
    """
    # Pre-tokenise exactly as the tokenizer will (lowercase, CLIP regex, byte-level symbols).
    splitter = _clip_pipeline(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    pieces: dict[str, int] = {}
    for word in words:
        normalized = splitter.normalizer.normalize_str(word)
        for piece, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized):
            pieces[piece] = pieces.get(piece, 0) + 1
    merges = _learn_bpe_merges(pieces)

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
    vocab: dict[str, int] = {}
    for sym in byte_symbols:
        vocab[sym] = len(vocab)
    for sym in byte_symbols:
        vocab[sym + "</w>"] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    return vocab, merges


def build_clip_tokenizer(
    words: Iterable[str] | None = None,
    model_max_length: int = 77,
    pad_token: str = CLIP_EOS,
) -> CLIPTokenizer:
    """Build a real :class:`transformers.CLIPTokenizer` whose vocabulary covers ``words``.

    Args:
        words: words that must be single tokens (case-insensitive: CLIP lowercases). Defaults to
            :data:`DEFAULT_WORDS`. Other text is still tokenised, through shorter merges and
            finally the 256 byte-level symbols, so no input is ever unknown.
        model_max_length: the sequence length pipelines pad/truncate to (77 for every CLIP).
        pad_token: ``"<|endoftext|>"`` as in SD 1.x / CLIP-L. (SD3's second CLIP pads with ``"!"``;
            any vocabulary token can be given.)

    Returns:
        A ``CLIPTokenizer`` (in transformers 5 ``CLIPTokenizerFast`` is the same class) with
        ``bos_token_id = len(tok) - 2`` and ``eos_token_id = len(tok) - 1``. Use ``len(tok)`` as
        the text encoder's ``vocab_size``.

    Example:
        >>> tok = build_clip_tokenizer(["red", "circle"])
        >>> enc = tok("Red circle", return_offsets_mapping=True)
        >>> tok.convert_ids_to_tokens(enc.input_ids)
        ['<|startoftext|>', 'red</w>', 'circle</w>', '<|endoftext|>']
        >>> enc.offset_mapping
        [(0, 0), (0, 3), (4, 10), (0, 0)]
    """
    vocab, merges = _clip_vocab_and_merges(_word_list(words))
    tok = CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=model_max_length,
    )
    return tok


# ---------------------------------------------------------------------------------------------
# T5: SentencePiece-style Unigram
# ---------------------------------------------------------------------------------------------

T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
SPIECE_UNDERLINE = "▁"

# Unigram log-probabilities. Viterbi maximises the sum, so a whole-word piece (-5) always beats
# spelling the word from two or more characters (-10 each).
_WORD_SCORE = -5.0
_CAPITALISED_WORD_SCORE = -5.5
_CONTINUATION_WORD_SCORE = -6.0  # "red" inside '"red"' or "x-red" (no word-start marker)
_CHAR_SCORE = -10.0
_SPACE_SCORE = -12.0  # the bare "▁" piece


@functools.lru_cache(maxsize=8)
def _t5_vocab(words: tuple[str, ...], extra_ids: int) -> list[tuple[str, float]]:
    """T5 layout: <pad>, </s>, <unk>, ▁, pieces..., <extra_id_{extra_ids-1}> ... <extra_id_0>."""
    scores: dict[str, float] = {}

    def add(piece: str, score: float) -> None:
        if piece not in scores or scores[piece] < score:
            scores[piece] = score

    chars = set(CHARACTERS)
    for w in words:
        chars.update(w)
    for w in words:
        if len(w) == 1:
            continue
        add(SPIECE_UNDERLINE + w, _WORD_SCORE)
        add(SPIECE_UNDERLINE + w[0].upper() + w[1:], _CAPITALISED_WORD_SCORE)
        add(w, _CONTINUATION_WORD_SCORE)
    for c in sorted(chars):
        if c.isspace():
            continue
        add(SPIECE_UNDERLINE + c, _CHAR_SCORE)
        add(c, _CHAR_SCORE)

    vocab = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0), (SPIECE_UNDERLINE, _SPACE_SCORE)]
    vocab += list(scores.items())
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    return vocab


def build_t5_tokenizer(
    words: Iterable[str] | None = None,
    model_max_length: int = 512,
    extra_ids: int = 100,
) -> T5TokenizerFast:
    """Build a real :class:`transformers.T5TokenizerFast` whose vocabulary covers ``words``.

    The model is a ``tokenizers`` Unigram with T5's special ids (``pad=0``, ``eos=1``, ``unk=2``),
    Metaspace pre-tokenisation (``▁`` marks a word start) and ``</s>`` appended to every sequence,
    i.e. the same components ``T5Tokenizer`` builds from a ``spiece.model``. T5 is case-sensitive:
    each word is a piece both as given and capitalised; other words are spelled from characters.

    Args:
        words: words that must be single ``▁word`` pieces. Defaults to :data:`DEFAULT_WORDS`.
        model_max_length: 512 as in the T5 tokenizers of SD3 and FLUX (PixArt-alpha pipelines
            truncate to 120 themselves).
        extra_ids: number of ``<extra_id_N>`` sentinel tokens (100 in T5), kept at the end.

    Returns:
        A ``T5TokenizerFast`` (an alias of ``T5Tokenizer`` in transformers 5). Use ``len(tok)`` as
        the encoder's ``vocab_size``.

    Example:
        >>> tok = build_t5_tokenizer(["red", "circle"])
        >>> enc = tok("Red circle", return_offsets_mapping=True)
        >>> tok.convert_ids_to_tokens(enc.input_ids)
        ['▁Red', '▁circle', '</s>']
        >>> enc.offset_mapping
        [(0, 3), (4, 10), (0, 0)]
    """
    vocab = _t5_vocab(_word_list(words), extra_ids)
    return T5TokenizerFast(
        vocab=list(vocab),
        extra_ids=extra_ids,
        model_max_length=model_max_length,
    )


# ---------------------------------------------------------------------------------------------
# Qwen2 (Qwen2.5-VL, Qwen3 text encoders): GPT-2-style byte-level BPE with a chat template
# ---------------------------------------------------------------------------------------------

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

# A ChatML template (the layout Qwen chat models are trained on), written for this module: system
# and user turns, then the assistant header when a generation prompt is asked for. With
# ``enable_thinking=False`` Qwen3's own template writes an empty think block; so does this one.
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@functools.lru_cache(maxsize=8)
def _qwen2_vocab_and_merges(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """256 byte symbols, then one token per merge learned on each word with and without its
    leading space (``Ġword`` / ``word``), as given and capitalised (Qwen is case-sensitive)."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pieces: dict[str, int] = {}
    for word in words:
        for form in dict.fromkeys((word, word.capitalize())):
            for text in (" " + form, form):
                for piece, _ in byte_level.pre_tokenize_str(text):
                    pieces[piece] = pieces.get(piece, 0) + 1
    merges = _learn_bpe_merges(pieces, end_of_word="")
    vocab = {sym: i for i, sym in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def build_qwen2_tokenizer(words: Iterable[str] | None = None, model_max_length: int = 32768) -> Qwen2Tokenizer:
    """Build a real :class:`transformers.Qwen2Tokenizer` (the tokenizer of Qwen2.5-VL and Qwen3,
    the text encoders of Qwen-Image, FLUX.2 Klein and Z-Image) whose vocabulary covers ``words``.

    Byte-level BPE with Qwen's pre-tokenizer (the class builds it), ``<|endoftext|>`` as pad/eos
    and the chat specials after the regular vocabulary, as in the released tokenizers, plus a
    ChatML ``chat_template`` so that ``apply_chat_template`` works. Nothing is ever unknown.

    Example:
        >>> tok = build_qwen2_tokenizer(["red", "circle"])
        >>> tok.tokenize("a red circle")
        ['a', 'Ġred', 'Ġcircle']
    """
    vocab, merges = _qwen2_vocab_and_merges(_word_list(words))
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    tok.chat_template = _CHATML_TEMPLATE
    return tok


GLM4_PREFIX = ("[gMASK]", "<sop>")  # GLM-4 starts every sequence with these two specials


def build_glm4_tokenizer(words: Iterable[str] | None = None, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Build a GLM-4-style tokenizer (CogView4's text encoder): a
    :class:`transformers.PreTrainedTokenizerFast`, as the released one is, over the byte-level BPE
    of :func:`build_qwen2_tokenizer` (GLM-4's is a byte-level tiktoken BPE), which prepends
    ``[gMASK] <sop>`` to every sequence and pads on the left, as GLM-4's does.

    Example:
        >>> build_glm4_tokenizer(["red", "circle"])("a red circle").tokens()
        ['[gMASK]', '<sop>', 'a', 'Ġred', 'Ġcircle']
    """
    backend = Tokenizer.from_str(build_qwen2_tokenizer(words).backend_tokenizer.to_str())
    backend.add_special_tokens(list(GLM4_PREFIX))
    backend.post_processor = processors.TemplateProcessing(
        single=" ".join(GLM4_PREFIX) + " $A", pair=" ".join(GLM4_PREFIX) + " $A $B",
        special_tokens=[(t, backend.token_to_id(t)) for t in GLM4_PREFIX])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=QWEN_SPECIALS[0], eos_token=QWEN_SPECIALS[0],
                                   padding_side="left", model_max_length=model_max_length)


# ---------------------------------------------------------------------------------------------
# Gemma (Gemma 2, the text encoder of Sana and Lumina 2): BPE over "▁"-joined text, byte fallback
# ---------------------------------------------------------------------------------------------

GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, as in the released Gemma vocabularies


@functools.lru_cache(maxsize=8)
def _gemma_vocab_and_merges(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, the 256 ``<0xNN>`` byte-fallback tokens, single characters (and ``▁``), then one
    token per merge learned on ``▁word`` and ``word``, as given and capitalised."""
    pieces: dict[str, int] = {}
    for word in words:
        for form in dict.fromkeys((word, word.capitalize())):
            for piece in (SPIECE_UNDERLINE + form, form):
                pieces[piece] = pieces.get(piece, 0) + 1
    merges = _learn_bpe_merges(pieces, end_of_word="")
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(GEMMA_SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in sorted({c for piece in pieces for c in piece} | set(string.printable.strip()) | {SPIECE_UNDERLINE}):
        vocab.setdefault(char, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def build_gemma_tokenizer(words: Iterable[str] | None = None, model_max_length: int = 8192) -> GemmaTokenizer:
    """Build a real :class:`transformers.GemmaTokenizer` (Gemma 2: the text encoder of Sana and
    Lumina 2) whose vocabulary covers ``words``: BPE over text whose spaces become ``▁``, byte
    fallback for anything else (nothing is unknown), ``<bos>`` prepended, ``<pad>=0``.

    Example:
        >>> tok = build_gemma_tokenizer(["red", "circle"])
        >>> tok.tokenize("a red circle")
        ['a', '▁red', '▁circle']
    """
    vocab, merges = _gemma_vocab_and_merges(_word_list(words))
    return GemmaTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


def build_bert_tokenizer(words: Iterable[str] | None = None, model_max_length: int = 512) -> BertTokenizer:
    """Build a real :class:`transformers.BertTokenizer` (WordPiece; HunyuanDiT's first encoder)
    whose vocabulary covers ``words`` (lowercased): BERT's specials, every word, and every
    character both word-initial and as a ``##`` continuation, so nothing printable is unknown.

    Example:
        >>> build_bert_tokenizer(["red", "circle"]).tokenize("a red circle")
        ['a', 'red', 'circle']
    """
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(string.printable.strip().lower()))
    pieces += chars + [f"##{c}" for c in chars] + [w.lower() for w in _word_list(words)]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length)


def tokenize_words(tokenizer, words: Sequence[str]) -> dict[str, list[str]]:
    """Tokens of each word (without special tokens): handy to check vocabulary coverage.

    Example:
        >>> tokenize_words(build_clip_tokenizer(), ["circle", "zyzzyva"])["circle"]
        ['circle</w>']
    """
    return {w: tokenizer.tokenize(w) for w in words}
