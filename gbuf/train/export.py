"""ONNX export of a model's one-frame computation, checked against PyTorch with ONNX Runtime.

What the graph computes:

- a streaming recurrent model (``recurrent`` and a ``step``): one ``step``. Inputs are the
  frame's buffers (``(B, C, H, W)``, named like the batch keys: ``image``, ``depth`` ...) then
  the state tensors; outputs are ``output`` (``(B, 3, sH, sW)``) then the next state, named
  ``next_<state>``. Feed each frame's ``next_*`` back as the next frame's state. Models with
  ``initial_state(frame)`` (RDG) start from that (all zeros for RDG, so the graph also runs the
  first frame); for others the example state is the one after a first PyTorch step, and the
  first frame of a sequence must come from there.
- any other model (single-image, or bidirectional with no step): the frame's buffers in,
  ``output`` out, as a one-frame clip.

Shapes are fixed at export (``lr_size``): a real-time engine runs one resolution. The check
runs ONNX Runtime (CPU) and PyTorch on two consecutive random frames (the second with the state
each side produced for the first) and reports the largest absolute difference of ``output``;
the state tensors (hidden features reach magnitudes of ~100 on random inputs) are compared
relative to their largest magnitude. Either above ``tolerance`` (1e-4) is an error and
nothing is written.

Needs the ``export`` extra (``onnx``, ``onnxruntime``, ``onnxscript``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from gbuf import runtime
from gbuf.errors import GbufError

DEFAULT_EXPORT_SIZE = (270, 480)
TOLERANCE = 1e-4

#: (logger, message template) of the graph optimiser's notes on every export: a multi-output
#: op (``Split``) it leaves unfolded, and an initializer it does not deduplicate because the
#: graph outputs it. Both describe a correct graph; they are dropped from the output.
ONNX_PASS_NOTES = (
    ("onnxscript.optimizer._constant_folding", "Skipping constant folding for op %s with multiple outputs."),
    ("onnx_ir.passes.common.initializer_deduplication",
     "Skipped deduplication of initializer '%s' as it is a graph input or output"),
)


class _DropNotes(logging.Filter):
    def __init__(self, template: str):
        super().__init__()
        self.template = template

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.template


@contextlib.contextmanager
def _quiet_onnx_passes():
    """Drop exactly the ``ONNX_PASS_NOTES`` records while exporting (every other record passes)."""
    installed = [(logging.getLogger(name), _DropNotes(template)) for name, template in ONNX_PASS_NOTES]
    for logger, note_filter in installed:
        logger.addFilter(note_filter)
    try:
        yield
    finally:
        for logger, note_filter in installed:
            logger.removeFilter(note_filter)


@dataclasses.dataclass
class ExportReport:
    path: Path
    model: str
    input_names: list[str]
    output_names: list[str]
    max_abs_error: float  # of ``output``, over two consecutive frames
    state_rel_error: float  # of the state tensors, relative to each one's largest magnitude (>= 1)
    lr_size: tuple[int, int]
    checkpoint_entry: str | None  # "params_ema" / "params" / None (random weights)
    #: Torch (and ONNX Runtime) CPU threads of the export and check.
    threads: int = 1


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise GbufError(f"gbuf export needs onnx, onnxruntime and onnxscript ({err.name} is missing): "
                        "pip install 'gbuf[export]'") from None


def session_options():
    """ONNX Runtime options for a check beside PyTorch: its thread count, no busy-waiting threads
    (ORT's default spin-wait keeps cores busy after a run and slows whatever runs next)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _graph_module(model, frame_keys, state_spec):
    """Wrap ``model`` as ``forward(*frame, *state) -> (output, *next_state)`` over plain tensors."""
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten

    class OneFrame(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            frame = dict(zip(frame_keys, tensors[:len(frame_keys)]))
            if state_spec is None:
                return self.model({k: v.unsqueeze(1) for k, v in frame.items()})[:, 0]
            state = tree_unflatten(list(tensors[len(frame_keys):]), state_spec)
            out, next_state = self.model.step(frame, state)
            return (out, *tree_flatten(next_state)[0])

    return OneFrame().eval()


def export_onnx(name: str, onnx_path: str | Path, ckpt: str | Path | None = None,
                lr_size: tuple[int, int] | str = DEFAULT_EXPORT_SIZE, key: str | None = None, opset: int = 18,
                tolerance: float = TOLERANCE, model=None, threads: int | None = None, **options) -> ExportReport:
    """Export model ``name`` (weights from ``ckpt`` if given) to ``onnx_path`` and check it.

    ``lr_size``: ``(height, width)`` or ``"HxW"``; ``threads``: torch CPU threads, which ONNX
    Runtime's check uses too (None: ``gbuf.runtime``'s default).
    """
    from gbuf.train import models

    if model is None and name not in models.names():
        raise GbufError(f"unknown model {name!r}; known models: {', '.join(models.names())}")
    if isinstance(lr_size, str):
        from gbuf.train.bench import parse_size

        lr_size = parse_size(lr_size)
    with runtime.threads(threads) as used:
        report = _export(name, onnx_path, ckpt, lr_size, key, opset, tolerance, model, options)
    report.threads = used
    return report


def _export(name, onnx_path, ckpt, lr_size, key, opset, tolerance, model, options) -> ExportReport:
    _require_onnx()
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch.utils._pytree import tree_flatten

    from gbuf.train import checkpoints, inference, models

    onnx_path = Path(onnx_path)
    if onnx_path.suffix != ".onnx":
        raise GbufError(f"{onnx_path}: the output name must end in .onnx")
    if model is None:
        model = models.create(name, **options)
    entry = checkpoints.load(model, ckpt, key) if ckpt is not None else None
    model = model.cpu().eval()

    frames = [inference.example_frame(model, lr_size, "cpu", seed=t) for t in range(2)]
    frame_keys = list(frames[0])
    streaming = inference.streams(model)
    with torch.inference_mode():
        if streaming:
            if callable(getattr(model, "initial_state", None)):
                state = model.initial_state(frames[0])
            else:
                state = model.step(frames[0], None)[1]
            state_leaves, state_spec = tree_flatten(state)
        else:
            state_leaves, state_spec = [], None
    base = getattr(model, "state_names", None)
    if streaming and not (base and len(base) == len(state_leaves)):
        base = [f"state_{i}" for i in range(len(state_leaves))]
    state_names = list(base) if streaming else []
    input_names = frame_keys + state_names
    output_names = ["output"] + [f"next_{n}" for n in state_names]

    graph = _graph_module(model, frame_keys, state_spec)
    example = tuple(frames[0][k] for k in frame_keys) + tuple(state_leaves)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(onnx_path.name + ".tmp.onnx")
    try:
        with torch.no_grad(), _quiet_onnx_passes():
            program = torch.onnx.export(graph, example, dynamo=True, input_names=input_names,
                                        output_names=output_names, opset_version=opset, verbose=False,
                                        external_data=False)
        program.save(str(tmp))
        session = ort.InferenceSession(str(tmp), session_options(), providers=["CPUExecutionProvider"])
        max_error, state_error = _check(graph, session, frames, frame_keys, state_leaves, input_names)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not (np.isfinite(max_error) and np.isfinite(state_error)) or max(max_error, state_error) > tolerance:
        tmp.unlink(missing_ok=True)
        raise GbufError(f"{onnx_path}: ONNX Runtime differs from PyTorch (output {max_error:.3g}, state "
                        f"{state_error:.3g} relative; tolerance {tolerance:g}); nothing written")
    tmp.replace(onnx_path)
    return ExportReport(onnx_path, name, input_names, output_names, max_error, state_error, tuple(lr_size), entry)


def _check(graph, session, frames, frame_keys, state_leaves, input_names) -> tuple[float, float]:
    """Largest |ORT - PyTorch| of ``output``, and of the state relative to its largest magnitude,
    over two consecutive frames (each side feeding back its own state)."""
    import numpy as np
    import torch

    output_error = state_error = 0.0
    torch_state, ort_state = list(state_leaves), [s.numpy() for s in state_leaves]
    for frame in frames:
        with torch.inference_mode():
            expected = graph(*(frame[k] for k in frame_keys), *torch_state)
        expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        feeds = dict(zip(input_names, [frame[k].numpy() for k in frame_keys] + ort_state))
        got = session.run(None, feeds)
        for i, (e, g) in enumerate(zip(expected, got)):
            e = e.numpy().astype(np.float64)
            diff = float(np.abs(e - g.astype(np.float64)).max()) if e.size else 0.0
            if i == 0:
                output_error = max(output_error, diff)
            else:
                state_error = max(state_error, diff / max(float(np.abs(e).max()) if e.size else 0.0, 1.0))
        torch_state, ort_state = list(expected[1:]), list(got[1:])
    return output_error, state_error
