"""Write the data files the README's commands read, from scikit-learn's bundled digits (nothing
is downloaded): ``train.parquet`` and ``test.parquet`` (a stratified split, with ``target``),
``batch.parquet`` and ``batch.csv`` (test rows, brightened: a covariate shift that drift
detection should catch).

    python examples/datasets.py [FOLDER]      # default: the current folder
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def write(folder: Path) -> list[Path]:
    frame = load_digits(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    batch = test.copy()
    pixels = [c for c in batch.columns if c != "target"]
    batch[pixels] = (batch[pixels] + 4.0).clip(upper=16.0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in ("train.parquet", "test.parquet", "batch.parquet", "batch.csv")]
    train.reset_index(drop=True).to_parquet(paths[0])
    test.reset_index(drop=True).to_parquet(paths[1])
    batch.reset_index(drop=True).to_parquet(paths[2])
    batch.reset_index(drop=True).to_csv(paths[3], index=False)
    return paths


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
