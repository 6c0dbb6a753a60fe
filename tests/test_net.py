"""The Net: building from prototxt, Caffe's wiring rules, weights in and out, and its errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite.net import Net, insert_splits
from pycaffe_lite.proto.files import read_net_param
from pycaffe_lite.proto import caffe_pb2
from conftest import fixture_path


def net_from_text(text, tmp_path, phase=caffe.TRAIN, **kw):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return Net(str(path), phase, **kw)


TWO_BRANCHES = """
name: "branches"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a"
        param { name: "shared_w" lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "data" top: "b"
        param { name: "shared_w" } param { lr_mult: 2 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
layer { name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "label" top: "loss" }
"""


def test_split_layers_use_caffes_names_and_gradients_add_up(tmp_path):
    net = net_from_text(TWO_BRANCHES, tmp_path)
    assert "data_data_0_split" in net.layer_names
    assert net.bottom_names["a"] == ["data_data_0_split_0"]
    assert net.bottom_names["b"] == ["data_data_0_split_1"]
    assert net.outputs == ["loss"] and net.inputs == ["data", "label"]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["sum"] == 0.0
    # in place: relu's top is the same blob as its bottom
    assert net.top_vecs[net.layer_names.index("relu")][0] is net.blobs["a"]


def test_param_sharing_by_name_shares_one_blob_and_its_learning_rates(tmp_path):
    net = net_from_text(TWO_BRANCHES, tmp_path)
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params) == 3  # shared weight + two biases
    assert net.params_lr == [1.0, 2.0, 2.0]
    assert net.params_weight_decay == [1.0, 0.0, 1.0]


def test_shared_param_with_conflicting_lr_mult_is_refused(tmp_path):
    text = TWO_BRANCHES.replace('param { name: "shared_w" } param { lr_mult: 2 }',
                                'param { name: "shared_w" lr_mult: 3 } param { lr_mult: 2 }')
    with pytest.raises(ValueError, match="layer 'b'.*shared_w.*lr_mult"):
        net_from_text(text, tmp_path)


def test_backward_through_shared_params_accumulates_both_uses(tmp_path):
    net = net_from_text(TWO_BRANCHES, tmp_path)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal((2, 3))
    net.blobs["label"].data[...] = rng.standard_normal((2, 4))
    net.clear_param_diffs()
    net.forward_backward()
    w, data = net.params["a"][0], net.blobs["data"].data
    a = data @ w.data.T + net.params["a"][1].data
    residual = (np.maximum(a, 0) + data @ w.data.T + net.params["b"][1].data - net.blobs["label"].data) / 2
    expected = (residual * (a > 0)).T @ data + residual.T @ data
    np.testing.assert_allclose(w.diff, expected, rtol=1e-4, atol=1e-6)


PHASES = """
name: "phases"
state { stage: "deploy" }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "u" include { phase: TEST } }
layer { name: "leveled" type: "ReLU" bottom: "x" top: "v" include { min_level: 2 } }
layer { name: "staged" type: "ReLU" bottom: "x" top: "w" include { stage: "deploy" stage: "extra" } }
layer { name: "not_staged" type: "ReLU" bottom: "x" top: "z" exclude { stage: "deploy" } }
"""


@pytest.mark.parametrize("phase, level, stages, expected", [
    (caffe.TRAIN, 0, (), ["in", "train_only"]),
    (caffe.TEST, 0, (), ["in", "test_only"]),
    (caffe.TEST, 2, (), ["in", "test_only", "leveled"]),
    (caffe.TRAIN, 0, ("extra",), ["in", "train_only", "staged"]),
])
def test_include_exclude_rules_follow_phase_level_and_stage(tmp_path, phase, level, stages, expected):
    net = net_from_text(PHASES, tmp_path, phase=phase, level=level, stages=stages)
    assert [n for n in net.layer_names if "split" not in n] == expected


def test_backward_is_pruned_where_nothing_reaches_a_loss(tmp_path):
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 4 } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "data" top: "f"
            param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 4 } }
    layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 4 } }
    layer { name: "side" type: "InnerProduct" bottom: "f" top: "side" inner_product_param { num_output: 2 } }
    layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "ip" bottom: "label" top: "loss" }
    """
    net = net_from_text(text, tmp_path)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need["frozen"] is False   # lr_mult 0 and no gradient needed below
    assert need["ip"] is True
    assert need["side"] is False     # its top reaches no loss
    forced = net_from_text("force_backward: true\n" + text, tmp_path)
    assert all(forced.layer_need_backward)
    # force_backward reaches every bottom a layer allows: not a loss layer's labels
    assert forced.bottom_need_backward[forced.layer_names.index("loss")] == [True, False]


def test_propagate_down_false_stops_the_gradient(tmp_path):
    text = TWO_BRANCHES.replace('bottom: "sum" bottom: "label" top: "loss"',
                                'bottom: "sum" bottom: "label" top: "loss" propagate_down: false propagate_down: false')
    net = net_from_text(text, tmp_path)
    assert net.bottom_need_backward[net.layer_names.index("loss")] == [False, False]
    assert not any(net.layer_need_backward[:net.layer_names.index("loss")])


# ---- errors that name what is at fault ------------------------------------------------------
def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(ValueError) as info:
        read_net_param(str(path))
    assert str(path) in str(info.value) and "4:3" in str(info.value)


def test_unknown_layer_type_names_the_layer_and_lists_known_types(tmp_path):
    with pytest.raises(ValueError, match=r"layer 'odd': unknown layer type 'Convolutoin'.*Convolution"):
        net_from_text('layer { name: "odd" type: "Convolutoin" }', tmp_path)


def test_missing_bottom_names_the_layer(tmp_path):
    text = 'layer { name: "relu" type: "ReLU" bottom: "nowhere" top: "r" }'
    with pytest.raises(ValueError, match="layer 'relu'.*unknown bottom blob 'nowhere'"):
        net_from_text(text, tmp_path)


def test_incompatible_shapes_name_the_layer(tmp_path):
    text = """
    layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 2 dim: 4 } } }
    layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
    """
    with pytest.raises(ValueError, match="layer 'sum'"):
        net_from_text(text, tmp_path)


def test_two_layers_writing_one_top_is_refused(tmp_path):
    text = """
    layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
    layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }
    """
    with pytest.raises(ValueError, match="layer 'b'.*'x'.*more than one layer"):
        net_from_text(text, tmp_path)


def test_python_layers_need_permission(tmp_path):
    text = 'layer { name: "py" type: "Python" python_param { module: "os" layer: "X" } }'
    with pytest.raises(PermissionError, match="layer 'py' is a Python layer.*allow_python=True"):
        net_from_text(text, tmp_path)


# ---- weights -----------------------------------------------------------------------------------
def test_lenet_weights_reproduce_caffes_probabilities_and_accuracy():
    model = fixture_path("caffe", "examples", "mnist", "lenet.prototxt")
    weights = fixture_path("weights", "lenet_iter_5000.caffemodel")
    digits = np.load(fixture_path("weights", "mnist_t10k_first1000.npz"))
    images, labels, expected = digits["images"], digits["labels"], digits["lenet_iter_5000_prob"]
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    probs = []
    for start in range(0, len(images), 64):
        batch = images[start:start + 64].reshape(-1, 1, 28, 28).astype(np.float32) * 0.00390625
        net.blobs["data"].reshape(*batch.shape)
        net.reshape()
        probs.append(net.forward(data=batch)["prob"].reshape(len(batch), -1).copy())
    probs = np.concatenate(probs)
    np.testing.assert_allclose(probs, expected.reshape(probs.shape), atol=1e-5)
    assert (probs.argmax(1) == labels).mean() == pytest.approx(0.988)


def test_cifar10_full_weights_load_with_every_shape_matching():
    model = fixture_path("caffe", "examples", "cifar10", "cifar10_full.prototxt")
    weights = caffe_pb2.NetParameter.FromString(
        fixture_path("weights", "cifar10_full_iter_70000.caffemodel").read_bytes())
    net = caffe.Net(str(model), caffe.TEST)
    net.copy_from(weights)
    loaded = 0
    for layer in weights.layer or weights.layers:
        for i, proto in enumerate(layer.blobs):
            values = np.asarray(proto.data, np.float32)
            np.testing.assert_array_equal(net.params[layer.name][i].data.ravel(), values)
            loaded += 1
    assert loaded == 8


def test_saved_weights_read_back_identically_and_refuse_other_shapes(tmp_path):
    model = fixture_path("caffe", "examples", "mnist", "lenet.prototxt")
    weights = fixture_path("weights", "lenet_iter_5000.caffemodel")
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    net.save(str(tmp_path / "copy.caffemodel"))
    again = caffe.Net(str(model), str(tmp_path / "copy.caffemodel"), caffe.TEST)
    for name, blobs in net.params.items():
        for ours, theirs in zip(blobs, again.params[name]):
            np.testing.assert_array_equal(ours.data, theirs.data)
    wider = read_net_param(str(model))
    next(l for l in wider.layer if l.name == "ip1").inner_product_param.num_output = 400
    with pytest.raises(ValueError, match="layer 'ip1'; shape mismatch"):
        caffe.Net(wider, str(weights), caffe.TEST)


def test_insert_splits_gives_loss_weighted_tops_their_own_split():
    param = text_format.Parse("""
      layer { name: "in" type: "Input" top: "x" }
      layer { name: "l" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "y" loss_weight: 2 }
      layer { name: "r" type: "ReLU" bottom: "y" top: "z" }
    """, caffe_pb2.NetParameter())
    split = insert_splits(param)
    names = [l.name for l in split.layer]
    assert names == ["in", "x_in_0_split", "l", "y_l_0_split", "r"]
    # one weight per top of the split, the loss on the first (Caffe's ConfigureSplitLayer)
    assert list(split.layer[3].loss_weight) == [2, 0] and not split.layer[2].loss_weight
    assert list(split.layer[4].bottom) == ["y_l_0_split_1"]


def test_a_loss_weighted_top_read_by_another_layer_trains_on_both_losses(tmp_path):
    net = net_from_text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 5 } } }
        layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" loss_weight: 2
                inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
        layer { name: "relu" type: "ReLU" bottom: "fc" top: "r" loss_weight: 1 }
    ''', tmp_path)
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((3, 5))
    out = net.forward()
    fc = net.blobs["fc"].data
    assert sorted(out) == ["fc_fc_0_split_0", "r"]
    net.backward()
    # d(2*sum(fc) + sum(relu(fc)))/d(bias) = sum over the batch of 2 + [fc > 0]
    np.testing.assert_allclose(net.params["fc"][1].diff, (2 + (fc > 0)).sum(0), rtol=1e-6)


def test_a_loss_layer_without_a_top_still_counts_but_is_not_an_output(tmp_path):
    net = net_from_text('''
        layer { name: "data" type: "Input" top: "data" top: "label"
                input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
        layer { name: "feat" type: "InnerProduct" bottom: "data" top: "feat" inner_product_param { num_output: 2 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
    ''', tmp_path)
    assert net.outputs == ["feat"]              # Caffe's AppendTop leaves an automatic top unlisted
    net.blobs["label"].data[...] = [0, 2]
    assert net.forward_backward() == pytest.approx(np.log(3), rel=1e-6)   # zero weights: uniform softmax
    net.forward()
    assert set(net.backward(feat=np.ones((2, 2), np.float32))) == {"data", "label"}


def test_a_layers_own_phase_wins_over_the_nets(tmp_path):
    net = net_from_text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 500 } } }
        layer { name: "drop" type: "Dropout" bottom: "data" top: "out" phase: TRAIN }
    ''', tmp_path, phase=caffe.TEST)
    out = net.forward(data=np.ones((4, 500), np.float32))["out"]
    assert set(np.unique(out)) == {0.0, 2.0}       # dropping, as in training (Caffe's Net::Init)


def test_state_level_and_stages_from_the_constructor_as_pycaffe_sets_them(tmp_path):
    text = '''
        state { level: 2 }
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "deep" type: "ReLU" bottom: "data" top: "deep" include { min_level: 1 } }
    '''
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    # from a file, pycaffe's Net sets the level (0 by default) over the prototxt's
    assert caffe.Net(str(path), caffe.TEST, stages=None).layer_names == ["data"]
    assert caffe.Net(network_file=str(path), phase=caffe.TEST, level=1).layer_names == ["data", "deep"]
    # a NetParameter keeps its own state (the solver builds its nets that way)
    assert Net(read_net_param(str(path)), phase=caffe.TEST).layer_names == ["data", "deep"]
    with pytest.raises(TypeError, match="needs the model once"):
        caffe.Net(str(path), network_file=str(path), phase=caffe.TEST)


@pytest.mark.parametrize("batch", [1, 6])
def test_a_loss_weight_on_a_plain_top_survives_a_new_batch_size(tmp_path, batch):
    net = net_from_text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
        layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" loss_weight: 2
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    ''', tmp_path)
    net.blobs["data"].reshape(batch, 3)
    net.reshape()
    net.forward(data=np.ones((batch, 3), np.float32))
    net.clear_param_diffs()
    net.backward()
    # d(2 * sum(fc))/d(bias) = 2 per image (Caffe keeps the multiplier in the top's diff)
    np.testing.assert_allclose(net.params["fc"][1].diff, [2.0 * batch] * 2)


def test_weights_written_in_the_prototxt_replace_the_fillers(tmp_path):
    net = net_from_text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param { num_output: 1 weight_filler { type: "gaussian" } }
                blobs { shape { dim: 1 dim: 3 } data: 1 data: 2 data: 3 }
                blobs { shape { dim: 1 } data: 6 } }
    ''', tmp_path)
    assert net.forward(data=np.ones((1, 3), np.float32))["ip"].tolist() == [[12.0]]
    with pytest.raises(ValueError, match="layer 'ip'; shape mismatch"):
        net_from_text('''
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
            layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 1 }
                    blobs { shape { dim: 1 dim: 2 } data: 1 data: 2 } blobs { shape { dim: 1 } data: 6 } }
        ''', tmp_path)
