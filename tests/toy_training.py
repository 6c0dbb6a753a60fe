"""A toy net and solver that train in a second: DummyData -> InnerProduct -> SoftmaxWithLoss, with an
Accuracy in TEST; the step policy halves the rate every 3 of 6 iterations, a test pass every 3."""
NET = """
name: "toy"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""
SOLVER = """
net: "net.prototxt"
base_lr: 0.1
lr_policy: "step"
gamma: 0.5
stepsize: 3
max_iter: 6
display: 1
test_iter: 2
test_interval: 3
snapshot_after_train: false
solver_mode: CPU
random_seed: 1
"""
