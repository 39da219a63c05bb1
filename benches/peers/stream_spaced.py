"""ONNX Runtime's one-step LSTM (I = H = 256, B = 1, T = 1) with the steps spaced apart, as
benches/harness/stream_latency.rs times ours: the caller busy-waits GAP µs between calls. Prints the
fastest, 10th percentile and median call per gap. Uses the venv of run.sh (run that first):
    .venv/bin/python stream_spaced.py [threads=2] [steps=3000]
Not part of CI."""
import statistics
import sys
import time

import numpy as np

import peers

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
sess = peers.ort_session("lstm", 256, 256, threads)
x = np.random.default_rng(2).uniform(-1, 1, (1, 1, 256)).astype(np.float32)
for gap_us in [0, 20, 50, 100]:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        while (time.perf_counter() - t) * 1e6 < gap_us:
            pass
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    print(f"ORT LSTM I=H=256 B=1 T=1, {threads} threads, a step every {gap_us} us: "
          f"fastest {times[0]:.1f}, p10 {times[len(times) // 10]:.1f}, "
          f"median {statistics.median(times):.1f} us per step")
