"""The training loop around the update: Caffe's log lines, test nets, average_loss, callbacks,
shared parameters, seeds, and stopping on a NaN loss."""
import logging
import re

import numpy as np
import pytest

from pycaffe_lite.solvers import TrainingDiverged, get_solver
from toy_layers import counter_layer, quadratic_layer, write_solver


def solver_for(tmp_path, text, net=None, **kwargs):
    net = quadratic_layer() + counter_layer() if net is None else net
    return get_solver(str(write_solver(tmp_path, text, net)), allow_python=True, **kwargs)


def test_log_lines_have_caffes_wording(tmp_path, caplog):
    solver = solver_for(tmp_path, 'base_lr: 0.01 lr_policy: "fixed" display: 2 max_iter: 4 '
                                  'snapshot_after_train: false\n')
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        solver.solve()
    lines = caplog.messages
    assert lines[:2] == ["Solving toy", "Learning Rate Policy: fixed"]
    iteration = [m for m in lines if re.fullmatch(r"Iteration \d+ \(\S+ iter/s, \S+s/2 iters\), loss = \S+", m)]
    assert [m.split()[1] for m in iteration] == ["0", "2"]
    assert re.search(r"^    Train net output #0: quad_loss = (\S+) \(\* 1 = \1 loss\)$", "\n".join(lines), re.M)
    assert "Iteration 2, lr = 0.01" in lines and "Iteration 1, lr = 0.01" not in lines
    assert re.fullmatch(r"Iteration 4, loss = \S+", lines[-2]) and lines[-1] == "Optimization Done."


def test_test_nets_average_each_output(tmp_path, caplog):
    text = ('base_lr: 0.01 lr_policy: "fixed" display: 0 max_iter: 4 test_iter: 3 test_interval: 2 '
            "test_initialization: false test_compute_loss: true snapshot_after_train: false\n")
    solver = solver_for(tmp_path, text)
    assert len(solver.test_nets) == 1 and "counter" in solver.test_nets[0].layer_names
    assert "counter" not in solver.net.layer_names
    # the test net uses the train net's parameter arrays
    assert solver.test_nets[0].params["quad"][0] is solver.net.params["quad"][0]
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        solver.solve()
    tests = [m for m in caplog.messages if "Test" in m]
    assert tests[0] == "Iteration 2, Testing net (#0)"
    assert tests[1].startswith("Test loss: ")
    assert re.fullmatch(r"    Test net output #0: quad_loss = (\S+) \(\* 1 = \1 loss\)", tests[2])
    assert tests[3:5] == ["    Test net output #1: score = 2", "    Test net output #2: score = 4"]
    assert tests[5] == "Iteration 4, Testing net (#0)"
    assert tests[-2:] == ["    Test net output #1: score = 5", "    Test net output #2: score = 10"]
    assert solver.test_results[0][1:] == [("score", 5.0, 0.0), ("score", 10.0, 0.0)]


def test_separate_train_and_test_net_files_and_test_state(tmp_path, caplog):
    (tmp_path / "train.prototxt").write_text('name: "t"\n' + quadratic_layer())
    (tmp_path / "test.prototxt").write_text(
        'name: "t"\n' + quadratic_layer()
        + counter_layer().replace("include { phase: TEST }", 'include { stage: "wanted" }'))
    text = (f'train_net: "{tmp_path}/train.prototxt" test_net: "{tmp_path}/test.prototxt" '
            f'test_net: "{tmp_path}/test.prototxt" test_iter: 1 test_iter: 1 test_interval: 5 '
            'test_state { stage: "wanted" } test_state { } base_lr: 0.1 lr_policy: "fixed" max_iter: 1\n')
    (tmp_path / "solver.prototxt").write_text(text)
    solver = get_solver(str(tmp_path / "solver.prototxt"), allow_python=True)
    assert ["counter" in net.layer_names for net in solver.test_nets] == [True, False]
    with pytest.raises(ValueError, match="test_iter must be specified for each test network"):
        (tmp_path / "bad.prototxt").write_text(text.replace("test_iter: 1 test_iter: 1", "test_iter: 1"))
        get_solver(str(tmp_path / "bad.prototxt"), allow_python=True)


def test_one_train_net_is_required(tmp_path):
    (tmp_path / "s.prototxt").write_text('base_lr: 0.1 lr_policy: "fixed"\n')
    with pytest.raises(ValueError, match="must specify exactly one train net .*found: none"):
        get_solver(str(tmp_path / "s.prototxt"))


def test_average_loss_smooths_the_displayed_loss(tmp_path, caplog):
    solver = solver_for(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" display: 1 average_loss: 3 max_iter: 6\n')
    losses = []
    solver.add_callback(lambda: None, lambda: losses.append(float(solver.net.blobs["quad_loss"].data)))
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        solver.step(6)
    shown = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = (\S+)", caplog.text)]
    want = [np.mean(losses[max(0, i - 2):i + 1]) for i in range(6)]
    np.testing.assert_allclose(shown, want, rtol=1e-5)


def test_shared_parameters_are_updated_once_and_in_place(tmp_path):
    shared = quadratic_layer("a").replace("lr_mult: 1 decay_mult: 1", 'name: "w0" lr_mult: 1 decay_mult: 1') \
                                 .replace("lr_mult: 2 decay_mult: 0", 'name: "w1" lr_mult: 2 decay_mult: 0')
    net = shared + shared.replace('name: "a"', 'name: "b"').replace('"a_loss"', '"b_loss"')
    solver = solver_for(tmp_path, 'base_lr: 0.1 momentum: 0.5 lr_policy: "fixed" max_iter: 3\n', net=net)
    a, b = solver.net.params["a"], solver.net.params["b"]
    assert a[0] is b[0] and len(solver.net.learnable_params) == 2
    arrays = [blob.data for blob in a]
    solver.step(3)
    assert all(blob.data is array for blob, array in zip(b, arrays))


def test_nan_loss_stops_with_a_snapshot_of_the_last_good_state(tmp_path):
    net = quadratic_layer(extra={"nan_at": 4})
    text = f'base_lr: 0.1 lr_policy: "fixed" max_iter: 10 snapshot_prefix: "{tmp_path}/run"\n'
    solver = solver_for(tmp_path, text, net=net)
    with pytest.raises(TrainingDiverged, match=r"^Iteration 3: loss = nan; training stopped\. The last good "
                                               r"state .* is in .*run_iter_3\.caffemodel and "
                                               r".*run_iter_3\.solverstate"):
        solver.step(10)
    assert solver.iter == 3
    good = [blob.data.copy() for blob in solver.net.learnable_params]
    assert all(np.isfinite(g).all() for g in good)
    again = solver_for(tmp_path, text, net=net)
    again.restore(f"{tmp_path}/run_iter_3.solverstate")
    for blob, value in zip(again.net.learnable_params, good):
        np.testing.assert_array_equal(blob.data, value)


def test_same_seed_same_run(tmp_path):
    net = ('layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param { '
           'shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: "gaussian" } } }\n'
           'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 '
           'weight_filler { type: "gaussian" std: 0.5 } } }\n'
           'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }\n')

    def run(seed, where):
        where.mkdir()
        solver = solver_for(where, f'base_lr: 0.1 lr_policy: "fixed" random_seed: {seed}\n', net=net)
        solver.step(3)
        return solver.net.params["ip"][0].data.copy()

    first, second, other = run(7, tmp_path / "a"), run(7, tmp_path / "b"), run(8, tmp_path / "c")
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
