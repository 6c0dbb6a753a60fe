"""Blob: values and gradients with Caffe's shape rules."""
import numpy as np
import pytest

from pycaffe_lite.blob import Blob


def test_reshape_keeps_values_when_the_count_is_unchanged_and_views_write_through():
    blob = Blob((2, 3, 4, 5))
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 3, 4, 5, 120)
    blob.data[...] = np.arange(120).reshape(2, 3, 4, 5)
    view = blob.data
    view[0, 0, 0, 0] = -1
    assert blob.data[0, 0, 0, 0] == -1
    blob.reshape(6, 20)
    assert blob.shape == (6, 20) and blob.data[0, 1] == 1
    blob.reshape(7)
    assert blob.shape == (7,) and not blob.data.any()
    assert (blob.num, blob.channels) == (7, 1)


def test_setting_an_array_of_the_wrong_shape_is_refused():
    blob = Blob((2, 3))
    blob.data = np.ones((2, 3), np.float64)
    assert blob.data.dtype == np.float32
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(3, 2\)"):
        blob.data = np.ones((3, 2))


def test_diff_is_allocated_on_first_use_and_axes_are_canonical():
    blob = Blob((4, 5))
    assert not blob.has_diff
    blob.diff[...] = 1
    assert blob.has_diff and blob.diff.sum() == 20
    assert blob.canonical_axis(-1) == 1 and blob.count_between(1) == 5
    with pytest.raises(ValueError, match="axis 2 out of range"):
        blob.canonical_axis(2)


def test_set_data_hands_the_array_over_and_checks_it():
    blob = Blob((2, 3), np.float32)
    old = blob.data
    fresh = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob.set_data(fresh)
    assert blob.data is fresh and not old.any()          # no copy: the old array is left as it was
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        blob.set_data(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="float32 on numpy an array of float64"):
        blob.set_data(np.zeros((2, 3)))
