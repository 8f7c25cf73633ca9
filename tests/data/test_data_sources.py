"""Data sources: a column the data set lacks is an error naming it, before anything is written; an unreachable Hub
fails at the first connection error, with the offline switch named."""

import socket

import pytest

from zoo.arguments import DataArguments


@pytest.mark.parametrize("kind,flag", [("vit-pretrain", "--label_column"), ("vit-pretrain", "--image_column"),
                                       ("lm-pretrain", "--text_column"), ("lm-finetune", "--label_column")])
def test_unknown_columns_of_embedded_data_are_errors(tmp_path, capsys, kind, flag):
    from zoo.data import DataError, load_images, load_texts

    data_args = DataArguments(**{flag.lstrip("-"): "nosuch"})
    with pytest.raises(DataError, match=f"{flag.lstrip('-')} 'nosuch' not in the data set embedded:"):
        if kind == "vit-pretrain":
            load_images(data_args, 8, 3, "embedded:digits")
        else:
            load_texts(data_args, "embedded:rotten_tomatoes" if kind == "lm-finetune" else "embedded:bbcnews")
    # the columns the embedded sets do have are accepted
    assert load_texts(DataArguments(text_column="text", label_column="label"), "embedded:rotten_tomatoes")[2]


def test_recipe_with_an_unknown_label_column_writes_nothing(tmp_path, capsys):
    from zoo.runs import recipe_main

    out = tmp_path / "out"
    assert recipe_main("vit-pretrain", ["--output_dir", str(out), "--label_column", "nosuch",
                                        "--dataset", "embedded:digits", "--image_size", "8", "--patch_size", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "label_column 'nosuch'" in err[-1]
    assert not out.exists() or not any(out.iterdir())


def test_an_unreachable_hub_fails_at_the_first_connection_error(monkeypatch):
    from huggingface_hub import constants

    from zoo.data import DataError, load_texts

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        load_texts(DataArguments(dataset="nosuch-user/nosuch-set"), "embedded:bbcnews")
