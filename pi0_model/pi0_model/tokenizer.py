"""Prompt tokenization in the pi0 and pi0.5 formats, right-padded or truncated to `max_len` tokens.

Follows openpi's `PaligemmaTokenizer`: the text is stripped, "_" and newlines
become spaces, and padding tokens (id 0) are masked.

    pi0:    BOS + text + "\\n"   ("\\n", encoded on its own, marks the start of the answer; 48 tokens)
    pi0.5:  BOS + "Task: {text}, State: {bins};\\nAction: "   (one encode; 200 tokens)

where bins are the normalized state's values discretized into 256 bins over
[-1, 1] (`discretize_state`), separated by spaces. A pi0.5 model without
state input (openpi's `discrete_state_input=False`) uses the pi0 format.
Prompts longer than the budget are cut at `max_len` tokens (the end of the
prompt is then lost), as openpi does.

The real tokenizer is PaliGemma's SentencePiece model (`tokenizer.model`,
vocab 257152), or the same as a HF `tokenizer.json`; it must be on disk,
nothing is downloaded. `tiny_tokenizer()` trains a small SentencePiece model
in memory for tests and the CPU demo.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Pi0Config
from .errors import CheckpointError, Pi0InputError

SENTENCEPIECE_FILE = "tokenizer.model"
HF_TOKENIZER_FILE = "tokenizer.json"

_TINY_CORPUS = (
    "pick up the red cube and place it in the bowl",
    "fold the towel in half",
    "open the top drawer and take out the spoon",
    "stack the green block on the blue block",
    "push the button",
    "wipe the table with the sponge",
    "put the cup on the plate",
    "close the lid of the box",
    "insert the peg into the hole",
    "pour the water into the glass",
    "hand over the marker to the other arm",
    "move left, move right, go forward, turn around, stop",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-()/",
)


STATE_BINS = 256  # pi0.5's state discretization: 256 equal bins over [-1, 1]


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Bin index of each normalized state value -> int64 array of the same shape.

    Bin k covers [-1 + 2k/256, -1 + 2(k+1)/256); values at or above the last
    lower edge, 1 and beyond included, fall in bin 255, and values below -1
    get -1 (openpi: np.digitize over the 256 lower edges, minus one).
    """
    lower_edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state, dtype=np.float64), lower_edges).astype(np.int64) - 1


def _clean(prompt: str) -> str:
    if not isinstance(prompt, str):
        raise Pi0InputError(f"instruction must be a str, got {type(prompt).__name__}")
    text = prompt.strip().replace("_", " ").replace("\n", " ")
    if not text:
        raise Pi0InputError("instruction is empty")
    return text


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: np.ndarray  # [max_len] int64, 0 = padding
    mask: np.ndarray  # [max_len] bool, False = padding
    truncated: bool  # the prompt did not fit and was cut


class PromptTokenizer:
    """Turns an instruction (and, for pi0.5, the state) into prompt tokens with a SentencePiece or HF backend."""

    def __init__(self, encode: Callable[[str], list[int]], bos_id: int, vocab_size: int, max_len: int, source: str):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        self._encode = encode
        self.bos_id = bos_id
        self.vocab_size = vocab_size  # ids are in [0, vocab_size)
        self.max_len = max_len
        self.source = source  # where it was loaded from, for messages

    def __repr__(self) -> str:
        return f"PromptTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, max_len={self.max_len})"

    def tokenize(self, prompt: str, state: np.ndarray | None = None) -> TokenizedPrompt:
        """pi0 format without `state`; pi0.5 format with the normalized, unpadded state [D]."""
        text = _clean(prompt)
        if state is None:
            tokens = [self.bos_id, *self._encode(text), *self._encode("\n")]
        else:
            bins = " ".join(str(b) for b in discretize_state(state).reshape(-1))
            tokens = [self.bos_id, *self._encode(f"Task: {text}, State: {bins};\nAction: ")]
        if max(tokens) >= self.vocab_size:
            raise Pi0InputError(
                f"instruction {prompt!r} encodes to a token outside the vocabulary "
                "(special-token text such as '<image>'?)"
            )
        truncated = len(tokens) > self.max_len
        tokens = tokens[: self.max_len]
        ids = np.zeros(self.max_len, dtype=np.int64)
        ids[: len(tokens)] = tokens
        mask = np.arange(self.max_len) < len(tokens)
        return TokenizedPrompt(ids, mask, truncated)


def model_prompt(
    tokenizer: PromptTokenizer, config: Pi0Config, instruction: str, normalized_state: np.ndarray
) -> TokenizedPrompt:
    """The prompt `config`'s model reads: pi0.5 with state input writes the state into it, pi0 does not.

    `normalized_state` is the robot's state after normalization and before padding (openpi tokenizes first).
    """
    return tokenizer.tokenize(instruction, normalized_state if config.discrete_state_input else None)


def _sentencepiece_tokenizer(model_proto: bytes, max_len: int, source: str) -> PromptTokenizer:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
    if processor.bos_id() < 0:
        raise CheckpointError(f"tokenizer {source} has no BOS token")
    return PromptTokenizer(processor.encode, processor.bos_id(), processor.get_piece_size(), max_len, source)


def _hf_tokenizer(path: Path, max_len: int) -> PromptTokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    bos_id = tokenizer.token_to_id("<bos>")
    if bos_id is None:
        raise CheckpointError(f"tokenizer {path} has no <bos> token")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    # Added tokens (PaliGemma's <image> is id 257152) lie past the model's embedding table.
    return PromptTokenizer(encode, bos_id, tokenizer.get_vocab_size(with_added_tokens=False), max_len, str(path))


def load_tokenizer(path: str | Path, max_len: int = 48) -> PromptTokenizer:
    """Load `tokenizer.model` (SentencePiece) or `tokenizer.json` (HF), given the file or its directory."""
    path = Path(path)
    candidates = [path] if path.is_file() else [path / SENTENCEPIECE_FILE, path / HF_TOKENIZER_FILE]
    for candidate in candidates:
        if candidate.is_file():
            try:
                if candidate.suffix == ".json":
                    return _hf_tokenizer(candidate, max_len)
                return _sentencepiece_tokenizer(candidate.read_bytes(), max_len, str(candidate))
            except CheckpointError:
                raise
            except Exception as error:  # the backends raise assorted types on corrupt files
                raise CheckpointError(f"cannot load tokenizer {candidate}: {error}") from error
    raise CheckpointError(
        f"no tokenizer found at {path} (looked for {', '.join(str(c) for c in candidates)}); pi0 needs PaliGemma's "
        f"SentencePiece model ({SENTENCEPIECE_FILE}) or a HF {HF_TOKENIZER_FILE}"
    )


def find_tokenizer(checkpoint_dir: str | Path) -> Path:
    """Default lookup inside a checkpoint: `<ckpt>/tokenizer.model`, `<ckpt>/tokenizer.json`, `<ckpt>/tokenizer*/`."""
    checkpoint_dir = Path(checkpoint_dir)
    for name in (SENTENCEPIECE_FILE, HF_TOKENIZER_FILE):
        if (checkpoint_dir / name).is_file():
            return checkpoint_dir / name
    for directory in sorted(checkpoint_dir.glob("tokenizer*")):
        for name in (SENTENCEPIECE_FILE, HF_TOKENIZER_FILE):
            if (directory / name).is_file():
                return directory / name
    raise CheckpointError(
        f"no tokenizer in {checkpoint_dir} (looked for {SENTENCEPIECE_FILE} and {HF_TOKENIZER_FILE} there and in "
        f"{checkpoint_dir}/tokenizer*/). LeRobot checkpoints do not bundle it: copy PaliGemma's tokenizer.model "
        "(e.g. from google/paligemma-3b-pt-224 or big_vision's paligemma_tokenizer.model) there, or pass tokenizer_path"
    )


def tiny_sentencepiece_model(vocab_size: int = 512) -> bytes:
    """A deterministic SentencePiece BPE model trained in memory (~10 ms) on a few robot instructions.

    Same special ids as PaliGemma (pad 0, eos 1, bos 2, unk 3); byte fallback
    makes any text encodable. Returns the serialized model (a `tokenizer.model` file's bytes).
    """
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TINY_CORPUS * 4),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def tiny_tokenizer(max_len: int = 48, vocab_size: int = 512) -> PromptTokenizer:
    """The tokenizer of `tiny_sentencepiece_model`, for tests and the random-weight demo."""
    return _sentencepiece_tokenizer(tiny_sentencepiece_model(vocab_size), max_len, "tiny in-memory SentencePiece")
