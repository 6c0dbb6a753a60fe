"""Solvers: Caffe's update rules, learning-rate policies and snapshots.

    import pycaffe_lite as caffe
    solver = caffe.get_solver("models/lenet/lenet_solver.prototxt")   # type from the file
    solver.step(100)           # or solver.solve(), solver.restore("x.solverstate")
    solver.net.blobs["loss"].data

`Solver` (solver.py) runs Caffe's fixed sequence; each type in sgd.py and
adaptive.py only supplies its update rule.
"""
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, RMSPropSolver
from .lr_policy import POLICIES, learning_rate
from .sgd import NesterovSolver, SGDSolver
from .signals import SignalHandler, SolverAction
from .solver import (Solver, TrainingDiverged, get_solver, read_solver_file, register_solver,
                     solver_class, solver_types)

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "POLICIES", "RMSPropSolver",
           "SGDSolver", "SignalHandler", "Solver", "SolverAction", "TrainingDiverged", "get_solver",
           "learning_rate", "read_solver_file", "register_solver", "solver_class", "solver_types"]
