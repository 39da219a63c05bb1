//! What only the fuzz targets use: `arbitrary` pickers of cells, ISAs and shapes, fill
//! patterns, the special-value plumbing of `cell_forward_backward`, and the C API's buffer
//! arguments. Tolerances, seeded cases and the oracles are the test kit's (`testkit`, shared
//! with the integration tests).

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::{CellKind, Isa};
use testkit::random::{RandomCase, SplitMix};

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

/// Every tensor of a problem that is present, mutable, for injecting special values.
pub fn tensors_mut(p: &mut RandomCase<f64>) -> Vec<(&'static str, &mut Vec<f64>)> {
    let mut v: Vec<(&'static str, &mut Vec<f64>)> = vec![
        ("weight_ih", &mut p.weight_ih),
        ("weight_hh", &mut p.weight_hh),
        ("bias_ih", &mut p.bias_ih),
        ("bias_hh", &mut p.bias_hh),
        ("x", &mut p.x),
    ];
    for (name, t) in [
        ("h0", &mut p.h0),
        ("c0", &mut p.c0),
        ("dy", &mut p.dy),
        ("dh_n", &mut p.dh_n),
        ("dc_n", &mut p.dc_n),
    ] {
        if let Some(t) = t {
            v.push((name, t));
        }
    }
    v
}

/// Whether every value of a problem is finite.
pub fn all_finite(p: &RandomCase<f64>) -> bool {
    let o = |t: &Option<Vec<f64>>| t.iter().flatten().all(|a| a.is_finite());
    [&p.weight_ih, &p.weight_hh, &p.bias_ih, &p.bias_hh, &p.x]
        .iter()
        .all(|t| t.iter().all(|a| a.is_finite()))
        && o(&p.h0)
        && o(&p.c0)
        && o(&p.dy)
        && o(&p.dh_n)
        && o(&p.dc_n)
}

/// For the ReLU RNN: the smallest `|a| / Σ|terms of a|` over every pre-activation `a` of the
/// f64 oracle's forward (`y` its output). Where this is within a few f32 roundings of zero, the
/// f32 paths may put `a` on different sides of ReLU's kink, and the gradient of that unit then
/// legitimately differs by O(1): the f32 comparison is only meaningful away from the kink.
/// Other cells return infinity (they are smooth).
pub fn relu_kink_distance(p: &RandomCase<f64>, y: &[f64]) -> f64 {
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
    use testkit::random::SplitMix;

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
