"""Test-time augmentation over a Net: 10 views (corners, centre, mirrors) at several scales."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
import pycaffe_lite.layers  # noqa: F401
from data_helpers import make_lmdb, wait_no_prefetch_threads
from pycaffe_lite.data import tta
from pycaffe_lite.data.lmdb_io import iter_datums
from pycaffe_lite.proto import caffe_pb2

IP = """layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.05 }}
                                 bias_filler {{ type: "constant" value: 0.1 }} }} }}"""


def test_crop_offsets_follow_caffe_io_oversample():
    assert tta.crop_offsets(7, 9, 4, 4) == [(0, 0), (0, 5), (3, 0), (3, 5), (1, 2)]
    assert tta.crop_offsets(256, 256, 227, 227, corners=False) == [(14, 14)]   # Caffe's TEST centre crop
    image = np.arange(7 * 9).reshape(7, 9)
    views = tta.views(image, 4)
    assert len(views) == 10 and np.array_equal(views[5], views[0][:, ::-1])
    assert np.array_equal(views[4], image[1:5, 2:6])
    assert tta.num_views((None, 8, (6, 8))) == 30


def _deploy_net():
    text = ('input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 } ' + IP.format() +
            ' layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }')
    caffe.set_random_seed(0)
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)


def test_predict_averages_the_views():
    net = _deploy_net()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 7, 3)).astype(np.uint8) for _ in range(3)]
    tp = text_format.Parse("scale: 0.01 mean_value: 100 mean_value: 110 mean_value: 120",
                           caffe_pb2.TransformationParameter())
    got = tta.predict(net, images, scales=(None, 8), transform_param=tp, images_per_batch=2)
    assert net.blobs["data"].shape == (1, 3, 4, 4) and net.blobs["prob"].shape == (1, 5)   # shapes restored
    assert got.shape == (3, 5) and np.allclose(got.sum(1), 1)
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])
    for image, row in zip(images, got):
        probs = []
        for scale in (None, 8):
            scaled = tta.rescale(image, scale).astype(np.float64)
            for view in tta.views(scaled, 4):
                x = ((view - [100, 110, 120]) * np.float32(0.01)).transpose(2, 0, 1).ravel()
                s = w @ x + b
                probs.append(np.exp(s - s.max()) / np.exp(s - s.max()).sum())
        assert np.allclose(row, np.mean(probs, axis=0), atol=1e-5)


def test_evaluate_over_the_nets_own_data_layer(tmp_path):
    db = make_lmdb(tmp_path, n=6, size=(6, 7))
    text = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
            f'transform_param {{ crop_size: 4 scale: 0.02 mean_value: 90 }} '
            f'data_param {{ source: "{db}" batch_size: 3 backend: LMDB }} }} ' + IP.format() +
            ' layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }'
            ' layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')
    caffe.set_random_seed(1)
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)
    try:
        result = tta.evaluate(net, scales=(None,), images_per_batch=4)
        assert result["num_images"] == 6 and result["probabilities"].shape == (6, 5)
        tp = net.layers[0].layer_param.transform_param
        decoded = [(dm_image(d), d.label) for _, d in iter_datums(db)]
        probs = tta.predict(_same_weights_deploy(net), [im for im, _ in decoded], transform_param=tp)
        labels = np.array([lb for _, lb in decoded])
        assert np.allclose(result["probabilities"], probs, atol=1e-6)
        assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
        assert 0 <= result["accuracy"] <= result["accuracy_top5"] == 1.0
        assert net.blobs["ip"].shape == (3, 5)            # shapes restored
        net.forward()             # the data layer still works after evaluation
        assert net.blobs["data"].shape == (3, 3, 4, 4)
    finally:
        net.close()
    assert not wait_no_prefetch_threads()


def dm_image(datum):
    from pycaffe_lite.data.datum import decode_datum
    from pycaffe_lite.data.transformer import as_hwc
    image, layout = decode_datum(datum)
    return as_hwc(image, layout)


def _same_weights_deploy(net):
    deploy = _deploy_net()
    for a, b in zip(deploy.params["ip"], net.params["ip"]):
        a.data[...] = b.data
    return deploy
