"""Prompt tokenization in the pi0 format, with SentencePiece and HF tokenizer files from disk."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pi0_model.errors import CheckpointError, Pi0InputError
from pi0_model.tokenizer import find_tokenizer, load_tokenizer, tiny_sentencepiece_model, tiny_tokenizer


def test_pi0_prompt_format(tokenizer):
    prompt = tokenizer.tokenize("fold the towel")
    n = int(prompt.mask.sum())
    assert prompt.ids.shape == prompt.mask.shape == (48,)
    assert prompt.ids.dtype == np.int64 and prompt.mask.dtype == bool
    assert prompt.ids[0] == tokenizer.bos_id == 2
    text = tokenizer._encode("fold the towel")
    newline = tokenizer._encode("\n")
    assert prompt.ids[:n].tolist() == [2, *text, *newline]
    assert prompt.mask[:n].all() and not prompt.mask[n:].any()
    assert (prompt.ids[n:] == 0).all()
    assert not prompt.truncated


def test_cleaning_matches_openpi(tokenizer):
    assert np.array_equal(tokenizer.tokenize("  fold_the towel\n").ids, tokenizer.tokenize("fold the towel").ids)


def test_long_prompts_are_truncated_to_the_budget(tokenizer):
    prompt = tokenizer.tokenize("pick up the red cube " * 20)
    assert prompt.truncated and prompt.mask.all() and prompt.ids[0] == 2


@pytest.mark.parametrize("bad", ["", "   \n ", None, 3])
def test_empty_or_non_string_instructions_are_rejected(tokenizer, bad):
    with pytest.raises(Pi0InputError, match="instruction"):
        tokenizer.tokenize(bad)


def test_tiny_tokenizer_is_deterministic_and_encodes_anything():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    text = "Stack the blocks, then say ¡olé! 42 times"
    assert np.array_equal(a.tokenize(text).ids, b.tokenize(text).ids)
    assert (a.tokenize(text).ids < a.vocab_size).all()


def test_sentencepiece_file_from_a_directory(tmp_path, tokenizer):
    (tmp_path / "tokenizer.model").write_bytes(tiny_sentencepiece_model())
    loaded = load_tokenizer(tmp_path)
    assert np.array_equal(loaded.tokenize("open the drawer").ids, tokenizer.tokenize("open the drawer").ids)
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.model"


def test_hf_tokenizer_json(tmp_path):
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "fold": 4, "the": 5, "towel": 6, "\n": 7}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    directory = tmp_path / "tokenizer"
    directory.mkdir()
    hf.save(str(directory / "tokenizer.json"))
    assert find_tokenizer(tmp_path) == directory / "tokenizer.json"
    prompt = load_tokenizer(find_tokenizer(tmp_path), max_len=8).tokenize("fold the towel")
    assert prompt.ids.tolist() == [2, 4, 5, 6, 7, 0, 0, 0]


def test_hf_tokenizer_added_tokens_stay_outside_the_vocabulary(tmp_path):
    # Like PaliGemma's tokenizer.json, whose <image> (257152) follows the 257152-entry vocabulary.
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "fold": 4, "the": 5, "towel": 6, "\n": 7}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    hf.add_special_tokens(["<image>"])
    hf.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json", max_len=8)
    assert tokenizer.vocab_size == 8
    assert tokenizer.tokenize("fold the towel").ids.tolist() == [2, 4, 5, 6, 7, 0, 0, 0]
    with pytest.raises(Pi0InputError, match="outside the vocabulary"):
        tokenizer.tokenize("fold <image> the towel")


def test_missing_or_broken_tokenizer_says_where_it_looked(tmp_path):
    with pytest.raises(CheckpointError, match=f"no tokenizer in {tmp_path}.*tokenizer.model.*paligemma"):
        find_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="no tokenizer found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path)
