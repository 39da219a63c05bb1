"""PyTorch and ONNX Runtime on the shapes of benches/rnn.rs (median of repeated runs).

Flop counts as in the crate: forward 2*T*B*G*H*(I+H), forward+backward 3x that.
Prints a markdown table (ms and GFLOP/s per shape and peer).
"""
import argparse
import statistics
import tempfile
import time

import numpy as np

try:
    import torch
except ImportError:  # the CUDA-only torch wheels may not install; ORT still runs
    torch = None
try:
    import onnxruntime as ort
    import onnx
    from onnx import TensorProto, helper
except ImportError:  # pragma: no cover
    ort = None

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}


def flops(cell, t, b, i, h):
    return 2 * t * b * GATES[cell] * h * (i + h)


def module(cell, i, h):
    if cell == "lstm":
        return torch.nn.LSTM(i, h)
    if cell == "gru":
        return torch.nn.GRU(i, h)
    return torch.nn.RNN(i, h, nonlinearity="tanh")


def median_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    # The median, and the fastest call (kept in the module-level BEST for the table): the
    # machine drifts between a fast and a slow state, and the fastest call is the steadier
    # figure to compare against ours.
    BEST[0] = min(times)
    return statistics.median(times)


BEST = [float("nan")]


def torch_case(cell, t, b, i, h, train, reps):
    m = module(cell, i, h)
    x = torch.randn(t, b, i, requires_grad=train)
    if train:
        def run():
            m.zero_grad(set_to_none=True)
            y, _ = m(x)
            y.sum().backward()
    else:
        def run():
            with torch.no_grad():
                m(x)
    return median_ms(run, reps)


def onnx_model(cell, i, h):
    """A one-op ONNX model (LSTM, GRU with linear_before_reset=1, or RNN tanh), random weights."""
    g = GATES[cell]
    rng = np.random.default_rng(1)
    k = 1.0 / np.sqrt(h)
    w = rng.uniform(-k, k, (1, g * h, i)).astype(np.float32)
    r = rng.uniform(-k, k, (1, g * h, h)).astype(np.float32)
    bias = rng.uniform(-k, k, (1, 2 * g * h)).astype(np.float32)
    op = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}[cell]
    attrs = {"hidden_size": h}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(op, ["x", "W", "R", "B"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, i])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.flatten()),
         helper.make_tensor("R", TensorProto.FLOAT, r.shape, r.flatten()),
         helper.make_tensor("B", TensorProto.FLOAT, bias.shape, bias.flatten())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def ort_session(cell, i, h, threads):
    """An ONNX Runtime CPU session of onnx_model(cell, i, h) on `threads` intra-op threads."""
    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        onnx.save(onnx_model(cell, i, h), f.name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(f.name, opts, providers=["CPUExecutionProvider"])


def ort_case(cell, t, b, i, h, reps, threads):
    if ort is None:
        return None
    sess = ort_session(cell, i, h, threads)
    x = np.random.default_rng(2).uniform(-1, 1, (t, b, i)).astype(np.float32)
    return median_ms(lambda: sess.run(None, {"x": x}), reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if torch is not None:
        torch.set_num_threads(args.threads)
    shapes = [
        # cell, T, B, I, H, train
        ("lstm", 128, 32, 512, 512, True),
        ("gru", 128, 32, 512, 512, True),
        ("rnn_tanh", 128, 32, 512, 512, True),
        ("lstm", 64, 32, 512, 512, False),
        ("gru", 64, 32, 512, 512, False),
        ("lstm", 128, 1, 256, 256, False),
        ("gru", 128, 1, 256, 256, False),
        ("lstm", 1, 1, 256, 256, False),
        ("lstm", 100, 16, 64, 64, False),
    ]
    print(f"torch {torch.__version__ if torch else 'absent'}, onnxruntime {ort.__version__ if ort else 'absent'}, "
          f"{args.threads} threads\n")
    print("| shape | mode | PyTorch ms | PyTorch GFLOP/s | PyTorch best ms | ORT ms | ORT GFLOP/s | ORT best ms |")
    print("|---|---|---|---|---|---|---|---|")
    for cell, t, b, i, h, train in shapes:
        fl = flops(cell, t, b, i, h) * (3 if train else 1)
        reps = 5 if fl > 5e10 else 21
        pt = torch_case(cell, t, b, i, h, train, reps) if torch else None
        pt_cols = f"{pt:.4f} | {fl / pt / 1e6:.1f} | {BEST[0]:.4f}" if pt else "– | – | –"
        ot = None if train else ort_case(cell, t, b, i, h, reps, args.threads)
        ort_cols = f"{ot:.4f} | {fl / ot / 1e6:.1f} | {BEST[0]:.4f}" if ot else "– | – | –"
        print(f"| {cell} T={t} B={b} I={i} H={h} | {'fwd+bwd' if train else 'fwd'} | "
              f"{pt_cols} | {ort_cols} |")


if __name__ == "__main__":
    main()
