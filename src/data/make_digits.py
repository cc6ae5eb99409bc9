"""Writes src/data/digits.u8: scikit-learn's copy of the UCI optdigits 8x8 images.

Source: sklearn.datasets.load_digits() (the 1,797 images of the test part of the UCI "Optical
Recognition of Handwritten Digits" data set, E. Alpaydin and C. Kaynak, 1998; CC BY 4.0,
https://doi.org/10.24432/C50P49), shipped inside scikit-learn as
sklearn/datasets/data/digits.csv.gz.

Layout: 1,797 records in sklearn's order, each 65 bytes: the 64 pixels in row-major order
(values 0..16) then the label (0..9). No header. Prints the record count, the class counts and
the FNV-1a 64-bit hash of the file (checked by tests/data.rs).

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install scikit-learn
     /tmp/v/bin/python src/data/make_digits.py
"""
import os

import numpy as np
from sklearn.datasets import load_digits


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    d = load_digits()
    x = d.data.astype(np.int64)  # (1797, 64)
    y = d.target.astype(np.int64)  # (1797,)
    assert x.shape == (1797, 64) and x.min() >= 0 and x.max() <= 16
    assert y.min() >= 0 and y.max() <= 9
    rec = np.concatenate([x, y[:, None]], axis=1).astype(np.uint8)  # (1797, 65)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.u8")
    blob = rec.tobytes()
    with open(out, "wb") as f:
        f.write(blob)
    print(f"{out}: {len(rec)} records, {len(blob)} bytes")
    print("class counts:", np.bincount(y, minlength=10).tolist())
    print(f"fnv1a64: {fnv1a64(blob):#018x}")


if __name__ == "__main__":
    main()
