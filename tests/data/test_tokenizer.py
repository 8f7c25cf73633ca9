"""The BPE tokenizer of LM members, trained on the corpus and cached once per zoo."""

from contextlib import contextmanager

from zoo.arguments import DataArguments
from zoo.data import tokenizer as tokenizers
from zoo.families.gpt2 import GPT2


def test_a_tokenizer_cached_by_another_rank_at_the_same_moment_is_used(tmp_path, monkeypatch):
    """Two ranks of one member train the same tokenizer at once; the one whose rename loses finds the other's cache."""
    data_args = DataArguments(dataset="embedded:rotten_tomatoes", max_train_samples=200)
    reference = tokenizers.build_tokenizer(data_args, 300, None, GPT2.tokenizer)

    @contextmanager
    def losing_rename(final):
        reference.save_pretrained(str(final))  # the other rank's folder lands first
        yield tmp_path / "unused"
        raise OSError(39, "Directory not empty", str(final))

    monkeypatch.setattr(tokenizers, "atomic_dir", losing_rename)
    built = tokenizers.build_tokenizer(data_args, 300, tmp_path / "cache", GPT2.tokenizer)
    assert built.get_vocab() == reference.get_vocab()
    (cache,) = (tmp_path / "cache").iterdir()
    assert (cache / "tokenizer.json").is_file()
