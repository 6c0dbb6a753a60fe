"""Fillers draw from Caffe's distributions (FillerParameter)."""
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite import backend
from pycaffe_lite.fillers import fill
from pycaffe_lite.proto import caffe_pb2


def filler(text):
    return text_format.Parse(text, caffe_pb2.FillerParameter())


@pytest.fixture(autouse=True)
def seeded():
    backend.set_random_seed(1)


def test_constant_and_uniform():
    assert np.all(fill(filler('type: "constant" value: 0.25'), (3, 4)) == 0.25)
    values = fill(filler('type: "uniform" min: -2 max: 3'), (200, 100))
    assert values.min() >= -2 and values.max() <= 3 and abs(values.mean() - 0.5) < 0.05


def test_gaussian_and_its_sparse_form():
    values = fill(filler('type: "gaussian" mean: 1 std: 0.5'), (300, 100))
    assert abs(values.mean() - 1) < 0.01 and abs(values.std() - 0.5) < 0.01
    sparse = fill(filler('type: "gaussian" std: 1 sparse: 5'), (20, 5000))
    # each weight kept with probability sparse / num_outputs = 5 / 20
    assert abs((sparse != 0).mean() - 0.25) < 0.01


@pytest.mark.parametrize("norm, n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 40 * 5 * 5), ("AVERAGE", (75 + 1000) / 2)])
def test_xavier_and_msra_scale_by_the_fan(norm, n):
    shape = (40, 3, 5, 5)
    xavier = fill(filler(f'type: "xavier" variance_norm: {norm}'), shape)
    assert np.abs(xavier).max() <= np.sqrt(3.0 / n) + 1e-6
    assert abs(xavier.var() - 1.0 / n) < 0.15 / n
    msra = fill(filler(f'type: "msra" variance_norm: {norm}'), shape)
    assert abs(msra.var() - 2.0 / n) < 0.15 * 2 / n


def test_positive_unitball_rows_sum_to_one():
    values = fill(filler('type: "positive_unitball"'), (6, 2, 3, 3))
    assert np.all(values >= 0)
    np.testing.assert_allclose(values.reshape(6, -1).sum(1), 1, rtol=1e-5)


def test_bilinear_is_caffes_upsampling_kernel():
    values = fill(filler('type: "bilinear"'), (1, 1, 4, 4))
    # Caffe's kernel for factor 2: outer product of (0.25, 0.75, 0.75, 0.25)
    axis = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(values[0, 0], np.outer(axis, axis))


def test_same_seed_same_weights_and_unknown_filler_is_named():
    backend.set_random_seed(7)
    a = fill(filler('type: "gaussian"'), (5,))
    backend.set_random_seed(7)
    np.testing.assert_array_equal(a, fill(filler('type: "gaussian"'), (5,)))
    with pytest.raises(ValueError, match="unknown filler type 'gausian'"):
        fill(filler('type: "gausian"'), (5,))
