"""examples/finetune_digits/run.py end to end, shortened: every command of the workflow
runs (split, train the 0-4 net, surgery, the four target runs) on freshly built digits,
in a work folder of its own."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycaffe_lite.proto.files import read_net_param

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "finetune_digits"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    subprocess.run([sys.executable, str(REPO / "data" / "digits" / "build.py"), "--out", str(root / "digits")],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("finetune_run", EXAMPLE / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    work = root / "work"
    status = run.main(["--work", str(work), "--digits", str(root / "digits"), "--per-class", "1",
                       "--source-iterations", "10", "--iterations", "2", "--test-interval", "2", "--seeds", "1"])
    return status, work, json.loads((work / "results.json").read_text())


def test_the_data_split_and_the_surgery_report(finished_run):
    status, _, results = finished_run
    assert status == 0
    assert results["counts"] == {"source_train": 753, "source_test": 140, "target_train": 5, "target_test": 840}
    surgery = results["surgery"]
    assert sorted(surgery["copied"]) == ["conv1", "conv2", "ip1"]
    assert surgery["reinitialised"] == {"ip2_5to9": "renamed from 'ip2'"}
    assert list(surgery["ignored"]) == ["ip2"]
    assert surgery["lr_mult"] == {"conv1": 0.1, "conv2": 0.1, "ip1": 0.1}


def test_every_arm_trained_and_was_tested(finished_run):
    _, _, results = finished_run
    assert sorted(results["target"]) == ["finetune", "finetune_frozen", "finetune_recipe", "scratch"]
    for arm in results["target"].values():
        assert sorted(arm["curve"], key=int) == ["0", "2"]
        assert all(0.0 <= accuracy <= 1.0 for accuracy in arm["curve"].values())
    # the three fine-tuned arms start from the same copied weights, so they test the same at iteration 0
    starts = {results["target"][a]["curve"]["0"] for a in ("finetune", "finetune_frozen", "finetune_recipe")}
    assert len(starts) == 1


def test_the_nets_read_the_work_folder_and_carry_the_learning_rates(finished_run):
    _, work, _ = finished_run

    def lr_mults(path):
        return {layer.name: [p.lr_mult for p in layer.param] for layer in read_net_param(path).layer if layer.param}

    for name in ("source_train_test.prototxt", "target_train_test.prototxt"):
        sources = [layer.data_param.source for layer in read_net_param(work / name).layer if layer.type == "Data"]
        assert sources and all(Path(source).parent == work for source in sources)
    recipe = lr_mults(work / "target_recipe_train_test.prototxt")
    assert recipe["conv1"] == pytest.approx([0.1, 0.2]) and recipe["ip2_5to9"] == [1, 2]
    frozen = lr_mults(work / "target_frozen_train_test.prototxt")
    assert frozen["conv1"] == frozen["conv2"] == frozen["ip1"] == [0, 0] and frozen["ip2_5to9"] == [1, 2]
