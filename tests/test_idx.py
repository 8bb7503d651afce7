"""IDX parsing: the header checks that stand between a bad file and the dataset."""

import numpy as np
import pytest

from core.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxFormatError, parse_idx
from tests.support import idx_bytes


def test_parses_images_and_labels():
    images = np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 28, 28) % 256
    parsed = parse_idx(idx_bytes(images), "x", IMAGES_MAGIC)
    assert parsed.shape == (2, 28, 28) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)
    np.testing.assert_array_equal(
        parse_idx(idx_bytes(np.array([3, 1, 4])), "y", LABELS_MAGIC), [3, 1, 4]
    )


def test_wrong_magic_names_the_file():
    data = idx_bytes(np.zeros(3, np.uint8))
    with pytest.raises(IdxFormatError, match=r"^imgs: magic number 2049, expected 2051"):
        parse_idx(data, "imgs", IMAGES_MAGIC)


def test_wrong_dimensions():
    data = idx_bytes(np.zeros((2, 28, 27), np.uint8))
    with pytest.raises(IdxFormatError, match=r"imgs: images are 28x27, expected 28x28"):
        parse_idx(data, "imgs", IMAGES_MAGIC)


def test_too_few_bytes_for_the_promised_items():
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5]
    with pytest.raises(IdxFormatError, match=r"imgs: header promises 3 items"):
        parse_idx(data, "imgs", IMAGES_MAGIC)


def test_too_few_bytes_for_a_header():
    with pytest.raises(IdxFormatError, match=r"lbls: too few bytes for an IDX header"):
        parse_idx(b"\x00\x00\x08", "lbls", LABELS_MAGIC)
