//! Helpers shared by the fuzz targets: case decoding, running the fused layer and the scalar
//! oracle, and the comparisons (the same tolerances as the integration tests).

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::reference;
use fused_rnn::{
    CellKind, Dims, FinalState, Float, GradMode, InitialState, InputGrads, Isa, Layer,
    LayerWeights, Mode, Upstream,
};

/// Relative tolerance of the f64 fused path against the f64 oracle (with an RMS floor): both
/// compute in f64 and differ only in summation order.
pub const F64_REL: f64 = 1e-10;

/// Relative tolerance of an f32 computation against the f64 oracle on the same inputs.
///
/// Copied verbatim from `tests/common/mod.rs::f32_tolerance` (keep the two in step; the
/// derivation is documented there): `tol = C · eps_f32 · (4 + sqrt(K · T · B))`, `C = 8`,
/// `K = I + H`, used with `abs_floor` = the RMS of the reference tensor.
pub fn f32_tolerance(d: &Dims) -> f64 {
    const C: f64 = 8.0;
    let n = ((d.input + d.hidden) * d.seq_len * d.batch) as f64;
    C * f64::from(f32::EPSILON) * (4.0 + n.sqrt())
}

/// Root mean square (0 for an empty slice).
pub fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64).sqrt()
}

/// The worst element of `got` against `want` under the rule of
/// `tests/common/mod.rs::assert_close`: `|got[i] - want[i]| <= rel * max(|want[i]|, floor)`,
/// both NaN or equal values (incl. equal infinities) passing. Returns `(index, got, want,
/// error / bound)` of the worst element (ratio 0 if all are equal); a ratio above 1 fails.
pub fn worst_ratio(got: &[f64], want: &[f64], rel: f64, floor: f64) -> (usize, f64, f64, f64) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut worst = (0, 0.0, 0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ratio = if (g.is_nan() && w.is_nan()) || g == w {
            0.0
        } else if g.is_nan() || w.is_nan() {
            f64::INFINITY
        } else {
            let err = (g - w).abs();
            if err.is_nan() {
                f64::INFINITY
            } else {
                err / (rel * w.abs().max(floor))
            }
        };
        if ratio > worst.3 {
            worst = (i, g, w, ratio);
        }
    }
    worst
}

/// Panics unless every element passes [`worst_ratio`]'s rule; `extra` is appended to the
/// message.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64, floor: f64, extra: &str) {
    let (i, g, w, ratio) = worst_ratio(got, want, rel, floor);
    assert!(
        ratio <= 1.0,
        "{what}: worst element [{i}]: got {g:e}, want {w:e}, err {:e} = {ratio:.3}x the bound \
         (rel {rel:e}, floor {floor:e}){extra}",
        (g - w).abs()
    );
}

/// Widens to f64.
pub fn widen<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|a| a.to_f64()).collect()
}

/// Rounds to `F`.
pub fn narrow<F: Float>(v: &[f64]) -> Vec<F> {
    v.iter().map(|&a| F::from_f64(a)).collect()
}

/// A small deterministic generator (SplitMix64), so big tensors cost the fuzzer 8 bytes of
/// seed instead of thousands of bytes of input.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), on a 2^-24 grid (exact in f32).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 40) as f64) / (1u64 << 23) as f64 - 1.0
    }
}

/// Every cell kind; the fuzzer picks one.
pub fn pick_cell(u: &mut Unstructured<'_>) -> arbitrary::Result<CellKind> {
    Ok(*u.choose(&CellKind::ALL)?)
}

/// Batch, input width, hidden width and thread count of a stream case for `cell`: one case in
/// eight is big enough for a stream on two threads to split its steps by hidden units (at
/// least the 3·2^15 multiply-adds per step it splits from; H not a multiple of the 16-unit
/// panel, so one panel is partial), the others small, on one thread.
pub fn pick_stream_dims(
    u: &mut Unstructured<'_>,
    cell: CellKind,
) -> arbitrary::Result<(usize, usize, usize, usize)> {
    Ok(if u.ratio(1, 8)? {
        let base = if cell.gates() == 1 { 112 } else { 72 };
        let h = base + u.int_in_range(0..=15)?;
        (4, h, h, 2)
    } else {
        (
            u.int_in_range(1..=4)?,
            u.int_in_range(1..=8)?,
            u.int_in_range(1..=16)?,
            1,
        )
    })
}

/// One of the instruction-set paths this CPU has.
pub fn pick_isa(u: &mut Unstructured<'_>) -> arbitrary::Result<Isa> {
    let avail = Isa::available();
    Ok(avail[u.choose_index(avail.len())?])
}

/// How one tensor of a case is filled; values land in [-1, 1] before scaling.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Fill {
    /// Uniform from the case's seed.
    Random,
    /// All zeros.
    Zero,
    /// One value everywhere (`v / 32767`).
    Const(i16),
    /// `+v, -v, +v, ...`.
    Alternating(i16),
    /// Random, but only about one element in `1 + n % 8` is nonzero.
    Sparse(u8),
}

impl Fill {
    /// `n` values in [-1, 1], each rounded to f32 (so the f32 and f64 runs see the same inputs).
    pub fn values(self, n: usize, rng: &mut SplitMix) -> Vec<f64> {
        let c = |v: i16| (f64::from(v) / 32767.0).clamp(-1.0, 1.0);
        let v: Vec<f64> = match self {
            Fill::Random => (0..n).map(|_| rng.unit()).collect(),
            Fill::Zero => vec![0.0; n],
            Fill::Const(v) => vec![c(v); n],
            Fill::Alternating(v) => (0..n)
                .map(|i| if i % 2 == 0 { c(v) } else { -c(v) })
                .collect(),
            Fill::Sparse(k) => {
                let every = 1 + u64::from(k % 8);
                (0..n)
                    .map(|_| {
                        let keep = rng.next_u64().is_multiple_of(every);
                        let v = rng.unit();
                        if keep { v } else { 0.0 }
                    })
                    .collect()
            }
        };
        v.into_iter().map(|a| f64::from(a as f32)).collect()
    }
}

/// A complete forward + backward problem, in f64 (every value exactly representable in f32).
#[derive(Debug, Clone)]
pub struct Problem {
    /// The cell kind.
    pub cell: CellKind,
    /// `T, B, I, H`.
    pub dims: Dims,
    /// `[G*H, I]`.
    pub weight_ih: Vec<f64>,
    /// `[G*H, H]`.
    pub weight_hh: Vec<f64>,
    /// `[G*H]`.
    pub bias_ih: Vec<f64>,
    /// `[G*H]`.
    pub bias_hh: Vec<f64>,
    /// `[T, B, I]`.
    pub x: Vec<f64>,
    /// `[B, H]`.
    pub h0: Option<Vec<f64>>,
    /// `[B, H]`, LSTM only.
    pub c0: Option<Vec<f64>>,
    /// `[T, B, H]`.
    pub dy: Option<Vec<f64>>,
    /// `[B, H]`.
    pub dh_n: Option<Vec<f64>>,
    /// `[B, H]`, LSTM only.
    pub dc_n: Option<Vec<f64>>,
}

impl Problem {
    /// The weights as a view.
    pub fn weights(&self) -> LayerWeights<'_, f64> {
        LayerWeights {
            weight_ih: &self.weight_ih,
            weight_hh: &self.weight_hh,
            bias_ih: &self.bias_ih,
            bias_hh: &self.bias_hh,
        }
    }

    /// Every tensor, mutable, for injecting special values.
    pub fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Vec<f64>)> {
        let mut v: Vec<(&'static str, &mut Vec<f64>)> = vec![
            ("weight_ih", &mut self.weight_ih),
            ("weight_hh", &mut self.weight_hh),
            ("bias_ih", &mut self.bias_ih),
            ("bias_hh", &mut self.bias_hh),
            ("x", &mut self.x),
        ];
        for (name, t) in [
            ("h0", &mut self.h0),
            ("c0", &mut self.c0),
            ("dy", &mut self.dy),
            ("dh_n", &mut self.dh_n),
            ("dc_n", &mut self.dc_n),
        ] {
            if let Some(t) = t {
                v.push((name, t));
            }
        }
        v
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        let o = |t: &Option<Vec<f64>>| t.iter().flatten().all(|a| a.is_finite());
        [
            &self.weight_ih,
            &self.weight_hh,
            &self.bias_ih,
            &self.bias_hh,
            &self.x,
        ]
        .iter()
        .all(|t| t.iter().all(|a| a.is_finite()))
            && o(&self.h0)
            && o(&self.c0)
            && o(&self.dy)
            && o(&self.dh_n)
            && o(&self.dc_n)
    }
}

/// Named output tensors of one forward + backward, widened to f64.
pub type Outputs = Vec<(&'static str, Vec<f64>)>;

/// Runs the fused layer in precision `F` on `isa`: an inference forward, a training forward
/// (their `y`, `h_n`, `c_n` must agree bit for bit, NaN payloads aside), then backward.
/// Panics if any call returns `Err` (every buffer is valid).
pub fn run_fused<F: Float>(p: &Problem, isa: Isa) -> Outputs {
    run_fused_on::<F>(p, isa, 1)
}

/// [`run_fused`] on a layer of `threads` threads.
pub fn run_fused_on<F: Float>(p: &Problem, isa: Isa, threads: usize) -> Outputs {
    let d = p.dims;
    let lstm = p.cell.has_cell_state();
    let (wih, whh, bih, bhh) = (
        narrow::<F>(&p.weight_ih),
        narrow::<F>(&p.weight_hh),
        narrow::<F>(&p.bias_ih),
        narrow::<F>(&p.bias_hh),
    );
    let w = LayerWeights {
        weight_ih: &wih,
        weight_hh: &whh,
        bias_ih: &bih,
        bias_hh: &bhh,
    };
    let mut layer = Layer::new(p.cell, d.input, d.hidden, w).expect("Layer::new");
    layer.set_isa(isa).expect("set_isa of an available ISA");
    layer
        .set_threads(threads)
        .expect("set_threads of a positive count");
    let x = narrow::<F>(&p.x);
    let h0 = p.h0.as_deref().map(narrow::<F>);
    let c0 = p.c0.as_deref().map(narrow::<F>);
    let init = InitialState {
        h0: h0.as_deref(),
        c0: c0.as_deref(),
    };
    let nan = F::from_f64(f64::NAN);
    let s = d.state_len();

    let mut ws_inf = layer
        .workspace(d.seq_len, d.batch, Mode::Inference)
        .expect("inference workspace");
    let (mut y_inf, mut h_inf, mut c_inf) = (vec![nan; d.y_len()], vec![nan; s], vec![nan; s]);
    layer
        .forward(
            &mut ws_inf,
            &x,
            init,
            &mut y_inf,
            FinalState {
                h_n: Some(&mut h_inf),
                c_n: if lstm { Some(&mut c_inf) } else { None },
            },
        )
        .expect("inference forward");

    let mut ws = layer
        .workspace(d.seq_len, d.batch, Mode::Training)
        .expect("training workspace");
    let (mut y, mut h_n, mut c_n) = (vec![nan; d.y_len()], vec![nan; s], vec![nan; s]);
    layer
        .forward(
            &mut ws,
            &x,
            init,
            &mut y,
            FinalState {
                h_n: Some(&mut h_n),
                c_n: if lstm { Some(&mut c_n) } else { None },
            },
        )
        .expect("training forward");
    let same = |a: &[F], b: &[F], what: &str| {
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            let (u, v) = (u.to_f64(), v.to_f64());
            assert!(
                (u.is_nan() && v.is_nan()) || u.to_bits() == v.to_bits(),
                "{} {}: training and inference {what} differ at [{i}]: {u:e} vs {v:e}",
                p.cell.name(),
                isa.name()
            );
        }
    };
    same(&y, &y_inf, "y");
    same(&h_n, &h_inf, "h_n");
    if lstm {
        same(&c_n, &c_inf, "c_n");
    }

    let dy = p.dy.as_deref().map(narrow::<F>);
    let dh_n = p.dh_n.as_deref().map(narrow::<F>);
    let dc_n = p.dc_n.as_deref().map(narrow::<F>);
    let mut grads = layer.zero_grads();
    let (mut dx, mut dh0, mut dc0) = (vec![nan; d.x_len()], vec![nan; s], vec![nan; s]);
    layer
        .backward(
            &mut ws,
            &x,
            Upstream {
                dy: dy.as_deref(),
                dh_n: dh_n.as_deref(),
                dc_n: dc_n.as_deref(),
            },
            &mut grads,
            InputGrads {
                dx: Some(&mut dx),
                dh0: Some(&mut dh0),
                dc0: if lstm { Some(&mut dc0) } else { None },
            },
            GradMode::Overwrite,
        )
        .expect("backward");
    let mut out = vec![
        ("y", widen(&y)),
        ("h_n", widen(&h_n)),
        ("dx", widen(&dx)),
        ("dh0", widen(&dh0)),
        ("dW_ih", widen(&grads.weight_ih)),
        ("dW_hh", widen(&grads.weight_hh)),
        ("db_ih", widen(&grads.bias_ih)),
        ("db_hh", widen(&grads.bias_hh)),
    ];
    if lstm {
        out.push(("c_n", widen(&c_n)));
        out.push(("dc0", widen(&dc0)));
    }
    out
}

/// The same tensors from the scalar oracle, computed in `F` (f64 is the oracle proper; the
/// f32 instance serves to triage a failure: how far plain scalar f32 code lands on the same
/// inputs).
pub fn run_reference<F: Float>(p: &Problem) -> Outputs {
    let n = |v: &Option<Vec<f64>>| v.as_deref().map(narrow::<F>);
    let (wih, whh, bih, bhh) = (
        narrow::<F>(&p.weight_ih),
        narrow::<F>(&p.weight_hh),
        narrow::<F>(&p.bias_ih),
        narrow::<F>(&p.bias_hh),
    );
    let w = LayerWeights {
        weight_ih: &wih,
        weight_hh: &whh,
        bias_ih: &bih,
        bias_hh: &bhh,
    };
    let x = narrow::<F>(&p.x);
    let (h0, c0, dy, dh_n, dc_n) = (n(&p.h0), n(&p.c0), n(&p.dy), n(&p.dh_n), n(&p.dc_n));
    let o = reference::forward(p.cell, p.dims, &w, &x, h0.as_deref(), c0.as_deref())
        .expect("reference::forward");
    let g = reference::backward(
        p.cell,
        p.dims,
        &w,
        &x,
        h0.as_deref(),
        c0.as_deref(),
        dy.as_deref(),
        dh_n.as_deref(),
        dc_n.as_deref(),
    )
    .expect("reference::backward");
    let (o_y, o_h_n, o_c_n) = (widen(&o.y), widen(&o.h_n), o.c_n.as_deref().map(widen));
    let (dx, dh0, dc0) = (widen(&g.dx), widen(&g.dh0), g.dc0.as_deref().map(widen));
    let gw = &g.weights;
    let mut out = vec![
        ("y", o_y),
        ("h_n", o_h_n),
        ("dx", dx),
        ("dh0", dh0),
        ("dW_ih", widen(&gw.weight_ih)),
        ("dW_hh", widen(&gw.weight_hh)),
        ("db_ih", widen(&gw.bias_ih)),
        ("db_hh", widen(&gw.bias_hh)),
    ];
    if let (Some(cn), Some(dc0)) = (o_c_n, dc0) {
        out.push(("c_n", cn));
        out.push(("dc0", dc0));
    }
    out
}

/// For the ReLU RNN: the smallest `|a| / Σ|terms of a|` over every pre-activation `a` of the
/// f64 oracle's forward (`y` its output). Where this is within a few f32 roundings of zero, the
/// f32 paths may put `a` on different sides of ReLU's kink, and the gradient of that unit then
/// legitimately differs by O(1): the f32 comparison is only meaningful away from the kink.
/// Other cells return infinity (they are smooth).
pub fn relu_kink_distance(p: &Problem, y: &[f64]) -> f64 {
    if p.cell != CellKind::Rnn(fused_rnn::RnnActivation::Relu) {
        return f64::INFINITY;
    }
    let d = p.dims;
    let (b, i, h) = (d.batch, d.input, d.hidden);
    let mut closest = f64::INFINITY;
    for t in 0..d.seq_len {
        for r in 0..b {
            for u in 0..h {
                let mut a = p.bias_ih[u] + p.bias_hh[u];
                let mut scale = p.bias_ih[u].abs() + p.bias_hh[u].abs();
                for k in 0..i {
                    let term = p.weight_ih[u * i + k] * p.x[(t * b + r) * i + k];
                    a += term;
                    scale += term.abs();
                }
                for k in 0..h {
                    let prev = if t == 0 {
                        p.h0.as_ref().map_or(0.0, |h0| h0[r * h + k])
                    } else {
                        y[((t - 1) * b + r) * h + k]
                    };
                    let term = p.weight_hh[u * h + k] * prev;
                    a += term;
                    scale += term.abs();
                }
                if scale > 0.0 {
                    closest = closest.min(a.abs() / scale);
                } else {
                    // a == 0 exactly with no terms: on the kink.
                    closest = 0.0;
                }
            }
        }
    }
    closest
}

/// Buffer arguments of the C API targets (`capi_stream`, `capi_layer`): a pointer and a length
/// chosen relative to the right length, backed by a `Vec` the target owns.
pub mod c_args {
    use arbitrary::Arbitrary;

    use super::SplitMix;

    /// A buffer argument relative to the right length.
    #[derive(Debug, Clone, Copy)]
    pub enum Buf {
        /// Exactly the right length.
        Right,
        /// 1-4 elements too many.
        Plus(u8),
        /// 1-4 elements too few (at least 0).
        Minus(u8),
        /// A non-NULL pointer with length 0.
        Empty,
        /// NULL with length 0.
        Null,
    }

    /// Mostly [`Buf::Right`] (5 in 8) and [`Buf::Null`] (1 in 8): a call with many buffers
    /// must often get all of them right for the fuzzer to reach the computation behind the
    /// checks (a uniform choice made an accepted 11-buffer backward about one call in 10^5).
    impl<'a> Arbitrary<'a> for Buf {
        fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
            let k: u8 = u.arbitrary()?;
            Ok(match k {
                0..=159 => Buf::Right,
                160..=191 => Buf::Null,
                192..=207 => Buf::Empty,
                208..=231 => Buf::Plus(k),
                _ => Buf::Minus(k),
            })
        }

        fn size_hint(_depth: usize) -> (usize, Option<usize>) {
            (1, Some(1))
        }
    }

    impl Buf {
        /// The length passed for a buffer whose right length is `right` (`None`: NULL).
        pub fn len(self, right: usize) -> Option<usize> {
            match self {
                Buf::Right => Some(right),
                Buf::Plus(k) => Some(right + 1 + usize::from(k % 4)),
                Buf::Minus(k) => Some(right.saturating_sub(1 + usize::from(k % 4))),
                Buf::Empty => Some(0),
                Buf::Null => None,
            }
        }
    }

    /// `n` values in [-scale, scale).
    pub fn values(rng: &mut SplitMix, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32)
            .collect()
    }

    /// A buffer of `len` elements (or NULL): its pointer and length, backed by `store`, filled
    /// by repeating `fill` (zeros if it is empty).
    pub fn arg(store: &mut Vec<f32>, len: Option<usize>, fill: &[f32]) -> (*mut f32, usize) {
        match len {
            None => (std::ptr::null_mut(), 0),
            Some(n) => {
                store.clear();
                store.extend(fill.iter().copied().cycle().take(n));
                // An empty `fill` repeats to nothing: zeros then, so that the buffer really
                // holds the `n` elements its length claims.
                store.resize(n, 0.0);
                // A non-NULL pointer even for n = 0 (an empty Vec's is dangling but aligned).
                (store.as_mut_ptr(), n)
            }
        }
    }

    /// Whether a buffer argument is present (non-NULL) with a length other than `right`.
    pub fn wrong_len(p: *const f32, len: usize, right: usize) -> bool {
        !p.is_null() && len != right
    }

    /// The bit patterns of `v`, every NaN as the one canonical NaN (payloads are no part of the
    /// contract; every other value must match exactly).
    pub fn bits(v: &[f32]) -> Vec<u32> {
        v.iter()
            .map(|x| {
                if x.is_nan() {
                    f32::NAN.to_bits()
                } else {
                    x.to_bits()
                }
            })
            .collect()
    }
}
