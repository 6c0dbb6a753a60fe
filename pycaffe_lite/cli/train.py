"""`pycaffe-lite train | test | time | device_query`: Caffe's `caffe` tool.

    pycaffe-lite train --solver models/lenet/lenet_solver.prototxt
    pycaffe-lite train --solver solver.prototxt --snapshot snap/lenet_iter_30.solverstate
    pycaffe-lite test --model train_test.prototxt --weights lenet.caffemodel --iterations 100
    pycaffe-lite time --model deploy.prototxt --iterations 10

The log has Caffe's wording behind glog's line prefix (`I1121 21:22:14.850540 4242 solver.py:239] `),
so Caffe's log parsers (tools/extra/parse_log.py, parse_log.sh) read it.  Paths in solver and net
prototxts are relative to the current directory, as with Caffe.
"""
import contextlib
import logging
import os
import sys
import time

from .. import backend
from ..io_utils import open_fresh
from ..kernels import jit_log
from ..proto import caffe_pb2
from ._progress import add_quiet, progress_bar

log = logging.getLogger("pycaffe_lite.cli")


# ---------------------------------------------------------------------------
# logging: glog's prefix, a --log file (the progress bars: _progress.py)
# ---------------------------------------------------------------------------
class GlogFormatter(logging.Formatter):
    """`I1121 21:22:14.850540 29117 solver.py:239] message`, as glog writes Caffe's lines."""
    LEVELS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}

    def format(self, record):
        stamp = time.localtime(record.created)
        micro = int((record.created - int(record.created)) * 1e6)
        prefix = "%s%02d%02d %02d:%02d:%02d.%06d %5d %s:%d] " % (
            self.LEVELS.get(record.levelname, "I"), stamp.tm_mon, stamp.tm_mday, stamp.tm_hour,
            stamp.tm_min, stamp.tm_sec, micro, os.getpid(), record.filename, record.lineno)
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return prefix + message


@contextlib.contextmanager
def caffe_logging(log_file=None, stream=None):
    """Route the pycaffe_lite log, glog-formatted, to stderr (and to `log_file`) for one command."""
    logger = logging.getLogger("pycaffe_lite")
    saved = logger.level, logger.propagate, list(logger.handlers)
    formatter = GlogFormatter()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handlers = [handler]
    if log_file:   # a fresh file: a symlink at the name is replaced, its target left alone
        file_handler = logging.StreamHandler(open_fresh(log_file, "w"))
        file_handler.setFormatter(formatter)
        handlers.append(file_handler)
    logger.handlers = handlers
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    except (ValueError, OSError, RuntimeError) as exc:
        if log_file:   # the CLI prints the error on stderr; keep it in the log file too
            handlers[1].handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (exc,), None))
        raise
    finally:
        for h in handlers:
            h.flush()
            if h is not handler:
                h.close()
                h.stream.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


# ---------------------------------------------------------------------------
# flags shared by the commands
# ---------------------------------------------------------------------------
def parse_gpus(flag):
    """Device ids from --gpu ('0', '0,1', 'all'); [] for the CPU."""
    if not flag:
        return []
    if flag == "all":
        count = backend.cupy_module().cuda.runtime.getDeviceCount()
        if not count:
            raise RuntimeError("--gpu all: no CUDA device found")
        return list(range(count))
    try:
        return [int(part) for part in flag.split(",")]
    except ValueError:
        raise ValueError(f"--gpu takes device ids separated by ',' or 'all', got '{flag}'") from None


def _device_name(device):
    props = backend.cupy_module().cuda.runtime.getDeviceProperties(device)
    name = props.get("name", b"?")
    return name.decode() if isinstance(name, bytes) else str(name)


def use_device(gpus, single=False):
    """Caffe's mode/device set-up for the commands; a clear error when CuPy or CUDA is missing."""
    if not gpus:
        log.info("Use CPU.")
        backend.set_mode_cpu()
        return
    if len(gpus) > 1:
        if single:
            for extra in reversed(gpus[1:]):
                log.info("Not using GPU #%d for single-GPU function", extra)
        else:
            log.warning("pycaffe_lite trains on one GPU per process; using GPU %d only (Caffe would split "
                        "each batch over GPUs %s)", gpus[0], ", ".join(map(str, gpus)))
    backend.cupy_module()   # raises with the import error quoted
    backend.set_device(gpus[0])
    backend.set_mode_gpu()
    if single:
        log.info("Use GPU with device ID %d", gpus[0])
        log.info("GPU device name: %s", _device_name(gpus[0]))
    else:
        log.info("Using GPUs %s", ", ".join(map(str, gpus)))
        log.info("GPU %d: %s", gpus[0], _device_name(gpus[0]))


def parse_stages(flag):
    return [s for s in (flag or "").split(",") if s]


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------
def cmd_train(args):
    """Caffe's `caffe train`; under mpirun one rank of data-parallel training, with --gpu 0,1 the
    parent of one process per GPU (distributed/launch.py)."""
    from ..distributed import launch
    from ..distributed.comm import launched_by_mpi, mpi4py_missing_message
    rank = launch.env_rank()
    if launched_by_mpi() and not _mpi4py_importable():
        if rank == 0:        # one message for the job, not one per rank
            raise RuntimeError(mpi4py_missing_message())
        return 2
    if not launched_by_mpi() and not launch.spawned_child():
        gpus = parse_gpus(args.gpu)
        if len(gpus) > 1:
            return launch.spawn_per_gpu(gpus)
    with caffe_logging(args.log if rank == 0 else None):
        if rank > 0:         # Caffe's LOG_IF(INFO, Caffe::root_solver()): rank 0 alone logs
            logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
        return _train(args)


def _mpi4py_importable():
    try:
        import mpi4py  # noqa: F401  (the package only: MPI itself starts with mpi4py.MPI)
    except ImportError:
        return False
    return True


def _train(args):
    from ..distributed import launch
    from ..solvers import read_solver_file
    if not args.solver:
        raise ValueError("Need a solver definition to train (--solver).")
    if args.snapshot and args.weights:
        raise ValueError("Give a snapshot to resume training or weights to finetune but not both.")
    param = read_solver_file(args.solver)
    param.train_state.level = args.level
    for stage in parse_stages(args.stage):
        param.train_state.stage.append(stage)
    comm, device = launch.world(parse_gpus(args.gpu), param.comm_timeout)
    try:
        return _train_rank(args, param, comm, device)
    except (ValueError, OSError, RuntimeError) as exc:
        if comm is None:
            raise
        # an error on one rank would leave the others waiting for it: end the whole job
        print(f"pycaffe-lite train: error: rank {comm.rank}: {exc}", file=sys.stderr, flush=True)
        comm.abort(2)


def _train_rank(args, param, comm, device):
    from .. import data as data_config
    from ..distributed.comm import CommError
    from ..solvers import SignalHandler, TrainingDiverged, get_solver
    gpus = [] if device is None else [device]
    if not args.gpu and comm is None and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        # Caffe's solver_mode defaults to GPU; honour it when a GPU is usable, else say so and go on.
        try:
            backend.cupy_module()
            gpus = [param.device_id]
        except RuntimeError as exc:
            log.info("solver_mode is GPU but no GPU is usable (%s); training on the CPU", exc)
    use_device(gpus)
    if gpus:
        param.device_id = gpus[0]
    data_config.set_solver_count(comm.size if comm else 1)
    data_config.set_solver_rank(comm.rank if comm else 0)
    signals = SignalHandler(args.sigint_effect, args.sighup_effect, args.sigterm_effect)
    if args.snapshot == "auto":
        args.snapshot = _latest_snapshot(param)
    # As tools/caffe.cpp: a resumed run ignores the solver file's `weights`, and --weights replaces
    # them; the solver loads what is left into each net (a list separated by ',', names trimmed).
    if args.snapshot:
        del param.weights[:]
    elif args.weights:
        del param.weights[:]
        param.weights.append(args.weights)
    solver = None
    try:
        solver = get_solver(param, allow_python=args.allow_python or None)
        solver.set_action_function(signals.check_for_signals)
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        sync = _attach(solver, comm)
        if args.tensorboard:
            solver.add_tensorboard(args.tensorboard, args.tensorboard_histograms)    # the root alone writes
            log.info("Writing TensorBoard event files to %s (tensorboard --logdir %s)",
                     args.tensorboard, args.tensorboard)
        elif args.tensorboard_histograms:
            raise ValueError("--tensorboard_histograms needs --tensorboard DIR")
        log.info("Starting Optimization")
        # the root rank alone draws a bar: the ranks of an mpirun job share one terminal
        with signals, progress_bar(args, "train", unit="iter", leave=False, initial=solver.iter,
                                   enabled=solver.is_root) as progress:
            solver.add_observer(_TrainingBar(progress))
            solver.solve()
        if sync is not None:
            log.info("The weights of all %d ranks agree (sha1 %s)", comm.size, sync.check_weights())
        log.info("Optimization Done.")
        return 0
    except TrainingDiverged as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("Interrupted; the last snapshot written is complete (files are written atomically).")
        return 130
    except CommError as exc:
        # a peer is gone: MPI cannot finalize with it, so leave at once (snapshots are atomic)
        log.error("%s; the last snapshot written is complete (files are written atomically).", exc)
        for h in logging.getLogger("pycaffe_lite").handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(1)
    finally:
        if solver is not None:
            for observer in solver.observers:
                getattr(observer, "close", lambda: None)()
            for net in [solver.net] + solver.test_nets:
                net.close()


def _latest_snapshot(param):
    """--snapshot auto: the newest complete pair of the solver's snapshot_prefix, or '' to start afresh."""
    from ..solvers.snapshots import latest_snapshot
    found = latest_snapshot(param.snapshot_prefix) if param.snapshot_prefix else None
    if found is None:
        log.info("--snapshot auto: no complete snapshot of %s; starting from iteration 0",
                 param.snapshot_prefix or "(no snapshot_prefix)")
    return found or ""


def _attach(solver, comm):
    """Data-parallel training over `comm` (None: a single process): rank 0's weights to all."""
    from ..distributed import attach
    if comm is None:
        return None
    log.info("Data-parallel training on %d ranks over %s (each with the full batch_size)", comm.size, comm.name)
    for rank, (host, pid) in enumerate(getattr(comm, "peers", ())):
        log.info("    rank %d: pid %d on %s", rank, pid, host)
    return attach(solver, comm)


class _TrainingBar:
    """The solver's observer that moves the progress bar: iterations done of max_iter, the loss."""

    def __init__(self, progress):
        self.progress = progress

    def on_iteration(self, solver, loss):
        self.progress(solver.iter + 1, solver.param.max_iter, loss=f"{loss:.4g}")


# ---------------------------------------------------------------------------
# test
# ---------------------------------------------------------------------------
def _load_net(args, phase):
    from ..net import Net
    return Net(args.model, phase=phase, level=args.level, stages=parse_stages(args.stage),
               allow_python=args.allow_python or None)


def cmd_test(args):
    import numpy as np
    from ..solvers.state import copy_weights
    with caffe_logging(args.log):
        if not args.model:
            raise ValueError("Need a model definition to score (--model).")
        if not args.weights:
            raise ValueError("Need model weights to score (--weights).")
        use_device(parse_gpus(args.gpu), single=True)
        net = _load_net(args, caffe_pb2.TEST)
        try:
            for path in args.weights.split(","):
                copy_weights(net, path)
            log.info("Running for %d iterations.", args.iterations)
            scores, names, loss = [], [], np.float32(0)
            with progress_bar(args, "test", unit="batch", leave=False) as progress:
                for i in range(args.iterations):
                    loss += np.float32(net.forward_from_to())
                    index = 0
                    for name in net.outputs:
                        for value in backend.to_numpy(net.blobs[name].data).ravel():
                            value = np.float32(value)
                            if i == 0:
                                scores.append(value)
                                names.append(name)
                            else:
                                scores[index] += value
                            log.info("Batch %d, %s = %s", i, name, _fmt(value))
                            index += 1
                    jit_log.report_jit_compiles()
                    progress(i + 1, args.iterations)
            if args.iterations:
                loss /= np.float32(args.iterations)
            log.info("Loss: %s", _fmt(loss))
            for score, name in zip(scores, names):
                mean = np.float32(score) / np.float32(args.iterations)
                weight = net.blob_loss_weights.get(name, 0.0)
                extra = f" (* {_fmt(weight)} = {_fmt(np.float32(weight) * mean)} loss)" if weight else ""
                log.info("%s = %s%s", name, _fmt(mean), extra)
        finally:
            net.close()
    return 0


def _fmt(value):
    return "%g" % float(value)


# ---------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------
def _synchronize():
    """Wait for the GPU so that a timer measures the work, not its launch."""
    if backend.mode() == "gpu":
        backend.cupy_module().cuda.Device().synchronize()


def conv_engine_choices():
    """[(layer or shape, engine)] from pycaffe_lite.conv.choice.chosen_engines, when that exists."""
    try:
        from ..conv import choice
    except ImportError:
        return []
    chosen = getattr(choice, "chosen_engines", None)
    if chosen is None:
        return []
    if callable(chosen):
        chosen = chosen()
    items = chosen.items() if hasattr(chosen, "items") else chosen
    return [(str(key), str(value)) for key, value in items]


def cmd_time(args):
    with caffe_logging(args.log):
        if not args.model:
            raise ValueError("Need a model definition to time (--model).")
        phase = {"": caffe_pb2.TRAIN, "TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}.get(args.phase or "")
        if phase is None:
            raise ValueError(f'phase must be "TRAIN" or "TEST", got "{args.phase}"')
        use_device(parse_gpus(args.gpu), single=True)
        net = _load_net(args, phase)
        try:
            _time_net(net, args.iterations)
        finally:
            net.close()
    return 0


def _time_net(net, iterations):
    log.info("Performing Forward")
    initial_loss = net.forward_from_to()
    log.info("Initial loss: %s", _fmt(initial_loss))
    log.info("Performing Backward")
    net.backward_from_to()
    layers = net.layers
    forward_per_layer = [0.0] * len(layers)
    backward_per_layer = [0.0] * len(layers)
    forward_time = backward_time = 0.0
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    total_start = time.perf_counter()
    for j in range(iterations):
        iter_start = time.perf_counter()
        for i, layer in enumerate(layers):
            start = time.perf_counter()
            layer.Forward(net.bottom_vecs[i], net.top_vecs[i])
            _synchronize()
            forward_per_layer[i] += time.perf_counter() - start
        forward_time += time.perf_counter() - iter_start
        backward_start = time.perf_counter()
        for i in reversed(range(len(layers))):
            # every layer, as Caffe's time() calls them: a layer no loss reaches still computes
            # the gradients of the parameters it learns (its bottoms get none)
            start = time.perf_counter()
            layers[i].Backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
            _synchronize()
            backward_per_layer[i] += time.perf_counter() - start
        backward_time += time.perf_counter() - backward_start
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 _fmt(round((time.perf_counter() - iter_start) * 1000)))
    total_ms = (time.perf_counter() - total_start) * 1000
    n = max(iterations, 1)
    log.info("Average time per layer: ")
    for name, fwd, bwd in zip(net.layer_names, forward_per_layer, backward_per_layer):
        log.info("%10s\tforward: %s ms.", name, _fmt(fwd * 1000 / n))
        log.info("%10s\tbackward: %s ms.", name, _fmt(bwd * 1000 / n))
    log.info("Average Forward pass: %s ms.", _fmt(forward_time * 1000 / n))
    log.info("Average Backward pass: %s ms.", _fmt(backward_time * 1000 / n))
    log.info("Average Forward-Backward: %s ms.", _fmt(total_ms / n))
    log.info("Total Time: %s ms.", _fmt(total_ms))
    log.info("*** Benchmark ends ***")
    choices = conv_engine_choices()
    if choices:
        log.info("Convolution engines chosen:")
        for key, engine in choices:
            log.info("    %s: %s", key, engine)


# ---------------------------------------------------------------------------
# device_query
# ---------------------------------------------------------------------------
_DEVICE_FIELDS = (
    ("Major revision number", "major"), ("Minor revision number", "minor"), ("Name", "name"),
    ("Total global memory", "totalGlobalMem"), ("Total shared memory per block", "sharedMemPerBlock"),
    ("Total registers per block", "regsPerBlock"), ("Warp size", "warpSize"),
    ("Maximum memory pitch", "memPitch"), ("Maximum threads per block", "maxThreadsPerBlock"),
    ("Maximum dimension of block", "maxThreadsDim"), ("Maximum dimension of grid", "maxGridSize"),
    ("Clock rate", "clockRate"), ("Total constant memory", "totalConstMem"),
    ("Texture alignment", "textureAlignment"), ("Concurrent copy and execution", "deviceOverlap"),
    ("Number of multiprocessors", "multiProcessorCount"),
    ("Kernel execution timeout", "kernelExecTimeoutEnabled"))
_YES_NO = {"deviceOverlap", "kernelExecTimeoutEnabled"}


def cmd_device_query(args):
    with caffe_logging(args.log):
        log.info("Querying GPUs %s", args.gpu or "all")
        cupy = backend.cupy_module()
        runtime = cupy.cuda.runtime
        for device in parse_gpus(args.gpu or "all"):
            props = runtime.getDeviceProperties(device)
            log.info("Device id:                     %d", device)
            for label, key in _DEVICE_FIELDS:
                value = props.get(key, "?")
                if isinstance(value, bytes):
                    value = value.decode()
                elif key in _YES_NO and value != "?":
                    value = "Yes" if value else "No"
                elif isinstance(value, (tuple, list)):
                    value = ", ".join(map(str, value))
                log.info("%-31s%s", label + ":", value)
    return 0


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------
def _common(parser, gpu_help="run on GPU device ID (CuPy): '0'"):
    parser.add_argument("--gpu", default="", help=gpu_help)
    parser.add_argument("--level", type=int, default=0, help="network level (NetState.level)")
    parser.add_argument("--stage", default="", help="network stages, separated by ','")
    parser.add_argument("--allow-python", "--allow_python", dest="allow_python", action="store_true",
                        help="allow Python layers (their modules run code)")
    parser.add_argument("--log", metavar="FILE", help="also write the log to FILE")


def register(subparsers):
    train = subparsers.add_parser("train", help="train or finetune a model",
                                  description="Train or finetune a model from a solver prototxt (caffe train). "
                                              "Unlike Caffe, which trains on through a NaN or infinite loss, "
                                              "a non-finite loss or gradient stops training with exit status "
                                              "1, after a snapshot of the last good weights; there is no "
                                              "switch to carry on: resume from that snapshot (--snapshot) "
                                              "with a lower base_lr or with clip_gradients.")
    train.add_argument("--solver", required=True, help="the solver definition protocol buffer text file")
    train.add_argument("--weights", default="",
                       help="pretrained weights to initialise finetuning, separated by ','; they replace "
                            "the solver file's `weights`; cannot be given with --snapshot")
    train.add_argument("--snapshot", default="",
                       help="a .solverstate to resume training from (the solver file's `weights` are "
                            "then not loaded); 'auto': the newest complete snapshot of the solver's "
                            "snapshot_prefix (a state whose .caffemodel exists and is of the same run), "
                            "or start from the beginning when there is none")
    train.add_argument("--sigint_effect", "--sigint-effect", dest="sigint_effect", default="stop",
                       choices=("stop", "snapshot", "none"),
                       help="action on SIGINT (Ctrl-C): stop (after a snapshot), snapshot or none")
    train.add_argument("--sighup_effect", "--sighup-effect", dest="sighup_effect", default="snapshot",
                       choices=("snapshot", "stop", "none"), help="action on SIGHUP: snapshot, stop or none")
    train.add_argument("--sigterm_effect", "--sigterm-effect", dest="sigterm_effect", default="stop",
                       choices=("stop", "snapshot", "none"),
                       help="action on SIGTERM (a scheduler's or docker stop's): stop (after a snapshot), "
                            "snapshot or none; not one of Caffe's flags, it defaults to what SIGINT does")
    train.add_argument("--tensorboard", metavar="DIR",
                       help="write TensorBoard event files into DIR: losses, outputs, learning rate, tests "
                            "(needs the tensorboard extra: pip install 'pycaffe-lite[tensorboard]')")
    train.add_argument("--tensorboard_histograms", "--tensorboard-histograms", dest="tensorboard_histograms",
                       type=int, default=0, metavar="N",
                       help="with --tensorboard, every N iterations also each parameter's and gradient's norm "
                            "and histogram (default 0: never)")
    train.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                       help="no progress bar (there is none either when stderr is not a terminal)")
    _common(train, "GPU device IDs separated by ',', or 'all' (CuPy); default: CPU, "
                   "or the solver's device when its solver_mode is GPU and a GPU is usable")
    train.set_defaults(func=cmd_train)

    test = subparsers.add_parser("test", help="score a model",
                                 description="Run a model's TEST phase and average its outputs (caffe test).")
    test.add_argument("--model", required=True, help="the model definition protocol buffer text file")
    test.add_argument("--weights", required=True, help="the trained weights (.caffemodel)")
    test.add_argument("--iterations", type=int, default=50, help="the number of batches to run")
    add_quiet(test)
    _common(test)
    test.set_defaults(func=cmd_test)

    timing = subparsers.add_parser("time", help="benchmark model execution time",
                                   description="Time forward and backward, per layer (caffe time).")
    timing.add_argument("--model", required=True, help="the model definition protocol buffer text file")
    timing.add_argument("--iterations", type=int, default=50, help="the number of iterations to time")
    timing.add_argument("--phase", default="", help="TRAIN (default) or TEST")
    _common(timing)
    timing.set_defaults(func=cmd_time)

    query = subparsers.add_parser("device_query", help="show GPU diagnostic information",
                                  description="Show the properties of GPU devices (caffe device_query).")
    query.add_argument("--gpu", default="", help="device IDs separated by ',', or 'all' (default)")
    query.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    query.set_defaults(func=cmd_device_query)
