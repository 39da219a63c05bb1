"""PyTorch and ONNX Runtime on the stack shapes of issue #17 (benches/harness/stack_shapes.rs
times ours the same way): a bidirectional LSTM layer (I = H = 256, T = 128, B = 1, 4, 32,
inference), and a 2-layer bidirectional LSTM (I = H = 512, T = 64, B = 32) fixed and packed
(lengths spread over [T/2, T], pack_padded_sequence(enforce_sorted=False)), inference and
training. ONNX Runtime runs the stack as a chain of bidirectional LSTM nodes (each node's
[T, 2, B, H] output transposed and reshaped to the next node's [T, B, 2H] input); it has no
training and no packed batches here.

    .venv/bin/python stack_peers.py --threads 2
"""
import argparse
import statistics
import tempfile
import time

import numpy as np

try:
    import torch
except ImportError:
    torch = None
try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError:
    ort = None


def timed(fn, reps, warmup=2):
    """Median and fastest call, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def lengths_of(t, b):
    return [t - r * (t // 2) // b for r in range(b)]


def torch_case(layers, t, b, ih, train, packed, reps):
    m = torch.nn.LSTM(ih, ih, num_layers=layers, bidirectional=True)
    x = torch.randn(t, b, ih, requires_grad=train)
    lengths = torch.tensor(lengths_of(t, b))

    def fwd():
        if packed:
            p = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            y, _ = m(p)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=t)
            return y
        y, _ = m(x)
        return y

    if train:
        def run():
            m.zero_grad(set_to_none=True)
            fwd().sum().backward()
    else:
        def run():
            with torch.no_grad():
                fwd()
    return timed(run, reps)


def ort_session(layers, ih, threads):
    rng = np.random.default_rng(1)
    k = 1.0 / np.sqrt(ih)
    nodes, inits = [], []
    inp = "x"
    for layer in range(layers):
        i = ih if layer == 0 else 2 * ih
        w = rng.uniform(-k, k, (2, 4 * ih, i)).astype(np.float32)
        r = rng.uniform(-k, k, (2, 4 * ih, ih)).astype(np.float32)
        bias = rng.uniform(-k, k, (2, 8 * ih)).astype(np.float32)
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        for n, v in zip(names, [w, r, bias]):
            inits.append(helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.flatten()))
        y = f"y{layer}"
        nodes.append(helper.make_node("LSTM", [inp] + names, [y], hidden_size=ih,
                                      direction="bidirectional"))
        # [T, 2, B, H] -> [T, B, 2, H] -> [T, B, 2H]
        nodes.append(helper.make_node("Transpose", [y], [f"t{layer}"], perm=[0, 2, 1, 3]))
        shape = f"shape{layer}"
        inits.append(helper.make_tensor(shape, TensorProto.INT64, [3], [0, 0, 2 * ih]))
        out = "out" if layer == layers - 1 else f"in{layer + 1}"
        nodes.append(helper.make_node("Reshape", [f"t{layer}", shape], [out]))
        inp = out
    graph = helper.make_graph(
        nodes, "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, ih])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        onnx.save(model, f.name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(f.name, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if torch is not None:
        torch.set_num_threads(args.threads)
    cases = [
        # layers, B, I = H, T, train, packed
        (1, 1, 256, 128, False, False),
        (1, 4, 256, 128, False, False),
        (1, 32, 256, 128, False, False),
        (2, 32, 512, 64, False, False),
        (2, 32, 512, 64, True, False),
        (2, 32, 512, 64, False, True),
        (2, 32, 512, 64, True, True),
    ]
    print(f"torch {torch.__version__ if torch else 'absent'}, "
          f"onnxruntime {ort.__version__ if ort else 'absent'}, {args.threads} threads\n")
    print("| shape | mode | PyTorch ms | ORT ms |")
    print("|---|---|---|---|")
    for layers, b, ih, t, train, packed in cases:
        reps = 5 if layers == 2 else 21
        pt = torch_case(layers, t, b, ih, train, packed, reps) if torch else None
        ot = None
        if ort is not None and not train and not packed:
            sess = ort_session(layers, ih, args.threads)
            x = np.random.default_rng(2).uniform(-1, 1, (t, b, ih)).astype(np.float32)
            ot = timed(lambda: sess.run(None, {"x": x}), reps)
        cell = lambda v: "-" if v is None else f"{v[0]:.3f} ({v[1]:.3f})"
        name = f"lstm L{layers} bi T={t} B={b} I=H={ih}{' packed' if packed else ''}"
        print(f"| {name} | {'fwd+bwd' if train else 'fwd'} | {cell(pt)} | {cell(ot)} |")


if __name__ == "__main__":
    main()
