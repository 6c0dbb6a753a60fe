"""Bad files are refused with pycaffe_lite.FormatError naming file, line and record: text that is not
UTF-8, missing model and weights files (also FileNotFoundError), shapes asking for more memory than there
is, non-finite settings, and devices or endless streams where a file should be."""
import os
import re
import time

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.cli import main
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.files import read_net_param, read_solver_param, read_weights

NET = ('name: "tiny"\n'
       'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
       'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"\n'
       '  param { lr_mult: 1 } inner_product_param { num_output: 4 weight_filler { type: "constant" value: 1 } } }\n')


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_prototxt_that_is_not_utf8_names_file_line_and_byte(tmp_path, capsys):
    payload = NET.encode().replace(b'name: "ip"', b'name: "i\xffp"')
    path = _write(tmp_path, payload)
    offset = payload.index(b"\xff")
    with pytest.raises(caffe.FormatError, match=rf"net.prototxt:3:\d+: not UTF-8 text \(byte 0xff at offset {offset}"):
        caffe.Net(str(path), caffe.TEST)
    try:
        read_net_param(path)
    except caffe.FormatError as exc:
        assert (exc.file, exc.line) == (str(path), 3)
    assert main(["time", "--model", str(path), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("pycaffe-lite time: error:")]
    assert len(errors) == 1 and f"offset {offset}" in errors[0] and str(path) in errors[0], err
    assert "Traceback" not in err


def test_missing_model_and_weights_are_file_not_found_and_format_errors(tmp_path, capsys):
    model = _write(tmp_path, NET)
    for call in (lambda: caffe.Net(str(tmp_path / "gone.prototxt"), caffe.TEST),
                 lambda: caffe.Net(str(model), str(tmp_path / "gone.caffemodel"), caffe.TEST),
                 lambda: read_weights(tmp_path / "gone.caffemodel"),
                 lambda: read_solver_param(tmp_path / "gone_solver.prototxt")):
        with pytest.raises(FileNotFoundError, match="gone") as info:
            call()
        assert isinstance(info.value, caffe.FormatError) and "gone" in info.value.filename
        assert "not a binary" not in str(info.value)
    assert main(["test", "--model", str(model), "--weights", str(tmp_path / "gone.caffemodel"),
                 "--iterations", "1"]) == 2
    assert "gone.caffemodel does not exist" in capsys.readouterr().err


def test_shapes_beyond_memory_are_refused_before_allocating(tmp_path, capsys):
    huge = NET.replace("dim: 2 dim: 3", "dim: 64 dim: 2147483648")
    path = _write(tmp_path, huge)
    start = time.perf_counter()
    with pytest.raises(caffe.MemoryLimitError, match=r"layer 'in' \(type Input\): a blob of shape "
                                                     r"\(64, 2147483648\) \(float32\) needs 512 GiB") as info:
        caffe.Net(str(path), caffe.TEST)
    assert time.perf_counter() - start < 1 and isinstance(info.value, caffe.FormatError)
    assert info.value.record == "in"
    assert main(["time", "--model", str(path), "--iterations", "1"]) == 2
    assert "needs 512 GiB" in capsys.readouterr().err


def test_the_memory_limit_is_a_setting(tmp_path, monkeypatch):
    path = _write(tmp_path, NET.replace("num_output: 4", "num_output: 100000"))   # a 1.2 MB weight
    caffe.Net(str(path), caffe.TEST).close()
    monkeypatch.setenv("PYCAFFE_LITE_MEMORY_LIMIT", "1M")
    with pytest.raises(caffe.MemoryLimitError, match=r"layer 'ip'.*shape \(100000, 3\).*PYCAFFE_LITE_MEMORY_LIMIT=1M"):
        caffe.Net(str(path), caffe.TEST)
    caffe.set_memory_limit(10 << 20)
    try:
        caffe.Net(str(path), caffe.TEST).close()
    finally:
        caffe.set_memory_limit(None)


@pytest.mark.parametrize("edit, field", [
    (("lr_mult: 1", "lr_mult: -inf"), "NetParameter.layer['ip'].param[0].lr_mult = -inf"),
    (('type: "constant" value: 1', 'type: "constant" value: nan'),
     "NetParameter.layer['ip'].inner_product_param.weight_filler.value = nan"),
])
def test_non_finite_net_settings_are_refused_naming_the_field(tmp_path, edit, field):
    path = _write(tmp_path, NET.replace(*edit))
    with pytest.raises(caffe.FormatError, match=r"net.prototxt:4: " + re.escape(field)):
        caffe.Net(str(path), caffe.TEST)
    param = caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge(NET.replace(*edit), param)
    with pytest.raises(caffe.FormatError, match="must be a finite number"):
        caffe.Net(param, caffe.TEST)


def test_a_non_finite_solver_setting_is_refused(tmp_path):
    _write(tmp_path, NET)
    solver = _write(tmp_path, f'net: "{tmp_path}/net.prototxt"\nbase_lr: nan\nlr_policy: "fixed"\n', "solver.prototxt")
    with pytest.raises(caffe.FormatError, match=r"solver.prototxt:2: SolverParameter.base_lr = nan"):
        caffe.get_solver(str(solver))


def test_an_infinite_clip_bound_still_means_no_bound(tmp_path):
    path = _write(tmp_path, NET + 'layer { name: "c" type: "Clip" bottom: "y" top: "c" '
                                  'clip_param { min: -inf max: 1 } }\n')
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["x"].data[...] = -5
    assert np.all(net.forward()["c"] == -15)
    net.close()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_are_refused_at_once(tmp_path):
    from pycaffe_lite.data.batches import list_file_lines
    from pycaffe_lite.data.datum import load_mean_file
    for read in (read_net_param, read_weights, load_mean_file, list_file_lines,
                 lambda path: caffe.Net(path, caffe.TEST)):
        start = time.perf_counter()
        with pytest.raises(caffe.FormatError, match="/dev/zero: a device"):
            read("/dev/zero")
        assert time.perf_counter() - start < 1


def test_a_pipe_is_read_up_to_the_stream_limit(tmp_path, monkeypatch):
    from pycaffe_lite import io_utils
    monkeypatch.setattr(io_utils, "STREAM_LIMIT", 1 << 16)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    import threading

    def feed():
        try:
            with open(fifo, "wb", buffering=0) as out:
                for _ in range(64):
                    out.write(b"#" * 4096)
        except BrokenPipeError:
            pass   # the reader stopped at the limit
    writer = threading.Thread(target=feed)
    writer.start()
    with pytest.raises(caffe.FormatError, match="more than 65536 bytes from a stream"):
        read_net_param(fifo)
    writer.join()


def test_a_net_a_later_layer_refuses_is_refused_before_filling_its_parameters(tmp_path):
    """The slow refusal fuzzing found: 1.5 GB of gaussian weights filled (a minute here) before the next
    layer's check; fillers now run once every layer is set up."""
    path = _write(tmp_path, 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
                            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
                            '{ num_output: 128000000 weight_filler { type: "gaussian" std: 0.01 } } }\n'
                            'layer { name: "bad" type: "Eltwise" bottom: "ip" bottom: "data" top: "c" }\n')
    start = time.perf_counter()
    with pytest.raises(caffe.FormatError, match="'bad'|'ip'"):
        caffe.Net(str(path), caffe.TEST)
    assert time.perf_counter() - start < 1


def test_fillers_draw_in_the_layers_order(tmp_path):
    """Deferred, the fills still come in the net's order: the same weights as filling layer by layer."""
    from pycaffe_lite.layer import create_layer
    from pycaffe_lite.blob import Blob
    path = _write(tmp_path, NET.replace('type: "constant" value: 1', 'type: "gaussian" std: 1') +
                  'layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z" inner_product_param '
                  '{ num_output: 3 weight_filler { type: "uniform" } bias_filler { type: "gaussian" } } }\n')
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TEST)
    caffe.set_random_seed(5)
    x = Blob((2, 3))
    layers = []
    for layer_param in net.param.layer[1:]:
        layer = create_layer(layer_param)
        top = Blob(())
        layer.SetUp([x], [top])
        layers.append(layer)
        x = top
    for layer, name in zip(layers, ("ip", "ip2")):
        for ours, theirs in zip(net.params[name], layer.blobs):
            np.testing.assert_array_equal(ours.data, theirs.data)
    net.close()
