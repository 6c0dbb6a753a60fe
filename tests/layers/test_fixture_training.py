"""Every net BVLC Caffe ships with a TRAIN phase and a loss takes one SGD step on random data.

Each net under ../shared/fixtures/caffe whose TRAIN phase holds a loss layer gets its data
layers swapped for DummyData (test_fixture_nets.with_dummy_data: the shapes its database
would give), a uniform [0, 1) data filler and a constant label of 1 (a valid class for
every classifier here, and "similar" for the siamese net's ContrastiveLoss).  The net is
saved as text, a solver prototxt pointing at it is written next to it, and
pycaffe_lite.solvers.get_solver runs one iteration: the loss must be finite and positive and
every parameter with lr_mult > 0 must have moved.  The ImageNet nets run at their full
spatial size (227 or 224) with batches of 1-2 so that the file stays quick on two cores;
AlexNet and the Flickr-style fine-tuning net (CaffeNet's size) run forward_backward only,
and there every trained parameter must receive a non-zero gradient.
"""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite.net import filter_net
from pycaffe_lite.proto.files import read_net_param
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver
from conftest import FIXTURES, fixture_path
from test_fixture_nets import with_dummy_data

# Batch per net (by a part of its path); others keep with_dummy_data's min(batch_size, 4).
BATCH = {"bvlc_googlenet": 1, "bvlc_alexnet": 2, "bvlc_reference_caffenet": 2, "finetune_flickr_style": 2}

# Too slow for a whole solver step here (60 M parameters each, like CaffeNet, whose solver step is
# tested): forward_backward only, checking that every trained parameter receives a gradient.
FORWARD_BACKWARD_ONLY = {"models/bvlc_alexnet/train_val.prototxt", "models/finetune_flickr_style/train_val.prototxt"}

# Parameters that one SGD step leaves where they are, by design of the net.
STILL = {
    # ContrastiveLoss depends on feat - feat_p only, and ip2 -> feat is linear: the two branches'
    # gradients of the shared ip2 and feat biases cancel exactly, and zero biases have no decay.
    "examples/siamese/mnist_siamese_train_test.prototxt": {"ip2[1]", "feat[1]"},
}

SOLVER = """
net: "{net}"
type: "SGD"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
max_iter: 1
display: 0
snapshot_after_train: false
random_seed: 1701
"""


def train_phase_has_loss(param):
    state = caffe_pb2.NetState(phase=caffe.TRAIN)
    train = filter_net(param, state)
    return any(layer.type.endswith("Loss") or any(layer.loss_weight) for layer in train.layer)


def training_nets():
    root = FIXTURES / "caffe"
    if not root.exists():
        return []
    nets = []
    for path in sorted(root.rglob("*.prototxt")):
        text = path.read_text()
        if "layer" not in text or "base_lr" in text:
            continue                                  # a solver
        if train_phase_has_loss(read_net_param(str(path))):
            nets.append(path.relative_to(root))
    return nets


def random_data_net(relative):
    param = with_dummy_data(read_net_param(str(fixture_path("caffe", relative))))
    batch = next((b for key, b in BATCH.items() if key in str(relative)), None)
    for layer in param.layer:
        if layer.type != "DummyData":
            continue
        dummy = layer.dummy_data_param
        del dummy.data_filler[:]
        for i, shape in enumerate(dummy.shape):
            if batch is not None:
                shape.dim[0] = batch
            filler = dummy.data_filler.add()
            if i == 0:
                filler.type, filler.min, filler.max = "uniform", 0.0, 1.0
            else:
                filler.type, filler.value = "constant", 1.0
    return param


def test_the_fixture_training_nets_are_all_found():
    nets = {str(p) for p in training_nets()}
    if not nets:
        pytest.skip(f"no fixture nets under {FIXTURES / 'caffe'}")
    for expected in ("examples/siamese/mnist_siamese_train_test.prototxt",
                     "examples/mnist/mnist_autoencoder.prototxt",
                     "examples/mnist/lenet_train_test.prototxt",
                     "examples/hdf5_classification/train_val.prototxt",
                     "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
                     "models/bvlc_googlenet/train_val.prototxt",
                     "models/finetune_flickr_style/train_val.prototxt"):
        assert expected in nets
    assert "examples/mnist/lenet.prototxt" not in nets          # a deploy net: no loss


def param_names(net):
    """id(blob) -> "layer[k]", naming a shared blob after its owner (the first layer holding it)."""
    names = {}
    for name, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            names.setdefault(id(blob), f"{name}[{k}]")
    return names


@pytest.mark.parametrize("relative", training_nets(), ids=str)
def test_one_sgd_step_on_random_data(relative, tmp_path):
    if str(relative) in FORWARD_BACKWARD_ONLY:
        net = caffe.Net(random_data_net(relative), caffe.TRAIN)
        try:
            net.clear_param_diffs()
            loss = net.forward_backward()
            assert np.isfinite(loss) and loss > 0, f"{relative}: loss {loss}"
            names = param_names(net)
            still = {names[id(blob)] for blob, lr in zip(net.learnable_params, net.params_lr)
                     if lr > 0 and not np.any(blob.diff)}
            assert still == STILL.get(str(relative), set()), f"{relative}: parameters without a gradient: {still}"
        finally:
            net.close()
        return
    net_file = tmp_path / "train.prototxt"
    net_file.write_text(text_format.MessageToString(random_data_net(relative)))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER.format(net=net_file))

    solver = get_solver(str(solver_file))
    net = solver.net
    try:
        trained = [(i, blob) for i, (blob, lr) in enumerate(zip(net.learnable_params, net.params_lr)) if lr > 0]
        assert trained, f"{relative}: no learnable parameters"
        before = [blob.data.copy() for _, blob in trained]
        solver.step(1)
        loss = float(solver.smoothed_loss)
        assert np.isfinite(loss) and loss > 0, f"{relative}: loss {loss}"
        assert solver.iter == 1
        names = param_names(net)
        unchanged = {names.get(id(blob), f"learnable #{i}") for (i, blob), old in zip(trained, before)
                     if np.array_equal(blob.data, old)}
        assert unchanged == STILL.get(str(relative), set()), f"{relative}: parameters that did not move: {unchanged}"
        assert all(np.isfinite(blob.data).all() for _, blob in trained)
    finally:
        net.close()


def test_siamese_branches_share_their_weights_through_the_step(tmp_path):
    relative = "examples/siamese/mnist_siamese_train_test.prototxt"
    net_file = tmp_path / "train.prototxt"
    net_file.write_text(text_format.MessageToString(random_data_net(relative)))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER.format(net=net_file))
    solver = get_solver(str(solver_file))
    net = solver.net
    before = net.params["conv1"][0].data.copy()
    solver.step(1)
    for layer in ("conv1", "conv2", "ip1", "ip2", "feat"):
        for own, shared in zip(net.params[layer], net.params[layer + "_p"]):
            assert np.array_equal(own.data, shared.data)
    assert not np.array_equal(net.params["conv1_p"][0].data, before)
    # One owner per shared pair: the branches' parameters are not learned twice.
    assert len(net.learnable_params) == sum(len(blobs) for name, blobs in net.params.items()
                                            if not name.endswith("_p"))
