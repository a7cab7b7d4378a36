"""The input pipeline: batches, shuffling, oversampling, class weights."""

import numpy as np
import pytest

from breast_cancer_pipeline.training.data import make_dataset, resolve_class_weights

CLASSES = ["benign", "malignant", "normal"]


def _arrays(tmp_path, n=20):
    """Images whose every pixel holds the image's index, memory-mapped like model_input."""
    x = np.repeat(np.arange(n, dtype=np.uint8), 4 * 4).reshape(n, 4, 4, 1)
    np.save(tmp_path / "x.npy", x)
    y = np.array([0] * 14 + [1] * 4 + [2] * 2)
    return np.load(tmp_path / "x.npy", mmap_mode="r"), y


def test_validation_batches_keep_order_and_pair_images_with_labels(tmp_path):
    x, y = _arrays(tmp_path)
    dataset, steps = make_dataset(x, y, 3, 8, training=False, seed=0)
    batches = list(dataset.as_numpy_iterator())
    assert steps == 3
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(20))
    np.testing.assert_array_equal(labels.argmax(axis=1), y)


def test_training_batches_are_shuffled_each_epoch_and_reproducible(tmp_path):
    x, y = _arrays(tmp_path)

    def epochs(seed):
        dataset, _ = make_dataset(x, y, 3, 8, training=True, seed=seed)
        out = []
        for _ in range(2):
            batches = list(dataset.as_numpy_iterator())
            ids = np.concatenate([b[0][:, 0, 0, 0] for b in batches])
            labels = np.concatenate([b[1].argmax(axis=1) for b in batches])
            np.testing.assert_array_equal(labels, y[ids])  # images and labels stay paired
            out.append(ids)
        return out

    first, second = epochs(3)
    assert sorted(first) == list(range(20))  # every image once per epoch
    assert not np.array_equal(first, second)  # reshuffled
    np.testing.assert_array_equal(epochs(3)[0], first)  # seeded


def test_oversampling_balances_the_classes(tmp_path):
    x, y = _arrays(tmp_path)
    dataset, steps = make_dataset(x, y, 3, 10, training=True, seed=0, oversample=True)
    labels = np.concatenate(
        [b[1].argmax(axis=1) for b in dataset.take(steps * 300).as_numpy_iterator()]
    )
    share = np.bincount(labels, minlength=3) / len(labels)
    # 6,000 draws: a share's standard error is 0.006, so 0.03 is five of them.
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.03)  # not 0.70 / 0.20 / 0.10
    plain, _ = make_dataset(x, y, 3, 10, training=True, seed=0)
    labels = np.concatenate([b[1].argmax(axis=1) for b in plain.as_numpy_iterator()])
    np.testing.assert_array_equal(np.bincount(labels), [14, 4, 2])


def test_make_dataset_refuses_mismatched_inputs(tmp_path):
    x, y = _arrays(tmp_path)
    with pytest.raises(ValueError, match="20 images but 19 labels"):
        make_dataset(x, y[:-1], 3, 8, training=False, seed=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        make_dataset(x, y, 2, 8, training=False, seed=0)


def test_class_weights_auto_none_and_explicit():
    y = np.array([0] * 6 + [1] * 3 + [2] * 3)
    assert resolve_class_weights("auto", y, CLASSES, False) == pytest.approx(
        {0: 12 / 18, 1: 12 / 9, 2: 12 / 9}
    )
    # A class absent from the training labels keeps weight 1 (no division by zero).
    assert resolve_class_weights("auto", np.array([0, 0, 1]), CLASSES, False) == pytest.approx(
        {0: 3 / 6, 1: 3 / 3, 2: 1.0}
    )
    assert resolve_class_weights("none", y, CLASSES, False) is None
    assert resolve_class_weights("auto", y, CLASSES, True) is None  # batches already balanced
    assert resolve_class_weights({"malignant": 3.0}, y, CLASSES, False) == {0: 1.0, 1: 3.0, 2: 1.0}
    assert resolve_class_weights([1, 2, 0.5], y, CLASSES, False) == {0: 1.0, 1: 2.0, 2: 0.5}
    with pytest.raises(ValueError, match=r"unknown classes \['cancer'\]"):
        resolve_class_weights({"cancer": 2.0}, y, CLASSES, False)
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        resolve_class_weights([1, 2], y, CLASSES, False)
    with pytest.raises(ValueError, match="must be auto, none"):
        resolve_class_weights("balanced", y, CLASSES, False)
