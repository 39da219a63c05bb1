//! # fused-rnn
//!
//! Explicit-SIMD CPU kernels for recurrent layers (vanilla RNN, LSTM, GRU) with handwritten
//! backpropagation through time, in f32 (the fast path) and f64 (the precision path).
//!
//! ## Cells
//!
//! Weights use PyTorch's layout and names: `weight_ih [G*H, I]`, `weight_hh [G*H, H]`,
//! `bias_ih [G*H]`, `bias_hh [G*H]`, gate row blocks in the order below. `σ` is the logistic
//! function, `*` the elementwise product.
//!
//! - **RNN** ([`CellKind::Rnn`], `G = 1`):
//!   `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`, or `max(0, ·)` with
//!   [`RnnActivation::Relu`].
//! - **LSTM** ([`CellKind::Lstm`], `G = 4`, gates `i, f, g, o`): each gate is
//!   `W_i· x_t + b_i· + W_h· h_{t-1} + b_h·` through `σ, σ, tanh, σ`;
//!   `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)`.
//! - **GRU** ([`CellKind::Gru`], `G = 3`, gates `r, z, n`), `r = σ(W_ir x + b_ir + W_hr h + b_hr)`,
//!   `z = σ(W_iz x + b_iz + W_hz h + b_hz)`, in two variants:
//!   - [`GruVariant::ResetAfter`] (PyTorch, cuDNN; ONNX `linear_before_reset = 1`):
//!     `n = tanh(W_in x + b_in + r * (W_hn h_{t-1} + b_hn))`, `h_t = (1 - z) * n + z * h_{t-1}`.
//!     **`z` weights the old state.**
//!   - [`GruVariant::ResetBefore`] (the classic formulation):
//!     `n = tanh(W_in x + b_in + W_hn (r * h_{t-1}) + b_hn)`, `h_t = (1 - z) * h_{t-1} + z * n`.
//!     **`z` weights the new candidate**, the opposite convention.
//!
//! ## How a layer runs
//!
//! [`Layer::forward`] computes the input projection of all `T` steps as one GEMM before the
//! time loop, then per step one GEMM produces all gates at once (the reset-before GRU needs a
//! second one for its candidate, since `r * h_{t-1}` exists only after `r`), and one
//! vectorized pass adds the biases, applies the activations, updates the state and, in
//! training mode, leaves the activated gates in the workspace for backward. There is no
//! per-gate GEMM. [`Layer::backward`] runs BPTT: per step one fused pass turns `dh_t` (and
//! `dc_t`) into the pre-activation gate gradients and one GEMM gives `dh_{t-1}`; after the loop
//! `dW_ih`, `dW_hh` and `dX` are GEMMs over all `T·B` rows and the bias gradients column sums.
//!
//! Sequences are time-major: `x [T, B, I]`, `y [T, B, H]`, states `[B, H]`, all row-major.
//! A [`Workspace`] sized from the dimensions holds everything else; nothing is allocated
//! inside the time loop.
//!
//! ## Activations and their error bound
//!
//! The f32 kernels use vectorized sigmoid and tanh with **at most 4 ULP** error against an f64
//! reference over `[-30, 30]` (tested), exact special values, and no subnormal outputs. Two
//! paths compute them: portable (`wide`) and AVX2+FMA (`core::arch`), chosen at run time
//! ([`Isa`]); no RUSTFLAGS are needed. The f64 kernels use std's functions. A third path,
//! [`Isa::Avx512`], runs the AVX2+FMA kernels' operations on AVX-512F registers, bit for bit
//! the same results; it is the default where the CPU has AVX-512F.
//!
//! ## Correctness
//!
//! [`reference`](mod@reference) is a scalar implementation written straight from the equations; every fast
//! path is tested against it (f64 to 1e-12 relative, f32 within a tolerance derived from
//! precision and length), and its gradients and the fused ones against central finite
//! differences in f64.
//!
//! ## Example
//!
//! ```
//! use fused_rnn::{CellKind, Direction, FinalState, GradMode, InitialState, InputGrads, Layer, Mode, Upstream};
//!
//! let (t, b, i, h) = (10, 4, 3, 16);
//! let layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, i, h, 42)?;
//! let mut ws = layer.workspace(t, b, Mode::Training)?;
//! let x = vec![0.5f32; t * b * i];
//! let mut y = vec![0.0f32; t * b * h];
//! layer.forward(&mut ws, Direction::Forward, &x, InitialState::default(), &mut y, FinalState::default())?;
//!
//! // Backward for L = sum(y): dL/dy = 1.
//! let dy = vec![1.0f32; t * b * h];
//! let mut grads = layer.zero_grads()?;
//! let mut dx = vec![0.0f32; t * b * i];
//! let up = Upstream { dy: Some(&dy), ..Default::default() };
//! let inputs = InputGrads { dx: Some(&mut dx), ..Default::default() };
//! layer.backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)?;
//! assert!(grads.weight_hh.iter().all(|g| g.is_finite()));
//! # Ok::<(), fused_rnn::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod activation;
mod cell;
pub mod error;
mod exec;
mod float;
mod gemm;
pub mod interop;
mod kernels;
pub mod layer;
mod packing;
pub mod policy;
pub mod reference;
pub mod sequence;
pub mod shape;
pub mod stack;
pub mod stream;
pub mod train;
pub mod weights;
pub mod workspace;

pub use error::{Error, Result};
pub use exec::pool::MAX_THREADS;
pub use float::Float;
pub use kernels::isa::Isa;
pub use layer::{FinalState, InitialState, InputGrads, Layer, LayerWeightsMut, Upstream};
pub use shape::{Batch, CellKind, Dims, Direction, GradMode, GruVariant, Mode, RnnActivation};
pub use stack::{Directions, Stack, StackGrads, StackWorkspace, StreamingStack};
pub use stream::StreamingLayer;
pub use train::{OutputGrads, OutputLayer, clip_grad_norm, clip_grad_value};
pub use weights::{LayerGrads, LayerWeights};
pub use workspace::Workspace;

/// Whether every element of `v` is finite (no NaN, no ±inf); `true` for an empty slice.
///
/// The layers propagate NaN and infinity instead of rejecting them (see [`policy`]); this is
/// the check to run on outputs or gradients where non-finite values must not go on.
///
/// ```
/// assert!(fused_rnn::all_finite(&[0.0f32, -1.5, 3e38]));
/// assert!(!fused_rnn::all_finite(&[0.0f64, f64::NAN]));
/// assert!(!fused_rnn::all_finite(&[f32::INFINITY]));
/// ```
pub fn all_finite<F: Float>(v: &[F]) -> bool {
    v.iter().all(|a| a.is_finite())
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Internal kernels exposed for the benchmarks and fuzz targets only; not a stable API.
#[doc(hidden)]
pub mod bench_support {
    use crate::error::{Result, check_len, mul_len};
    use crate::kernels::dispatch::StepKernels;
    use crate::kernels::step_gemm::{Accumulate, AlignedBuf, Operand, PackedLayout, PackedRef};
    use crate::{Error, Isa};

    /// A `[k, n]` right operand packed once for the per-step GEMM, as the layers pack `W_hhᵀ`.
    #[derive(Debug, Clone)]
    pub struct PackedStepGemm {
        layout: PackedLayout,
        data: AlignedBuf<f32>,
    }

    impl PackedStepGemm {
        /// Packs `w [k, n]` (row-major).
        pub fn new(w: &[f32], k: usize, n: usize) -> Result<Self> {
            if k == 0 || n == 0 {
                return Err(Error::ZeroDim { what: "k or n" });
            }
            check_len("w [k, n]", w, mul_len("w [k, n]", k, n)?)?;
            let layout = PackedLayout {
                k,
                groups: 1,
                group_width: n,
                nr: <f32 as StepKernels>::PANEL_WIDTH,
            };
            let len = layout
                .checked_len()
                .ok_or(Error::SizeOverflow { what: "packed w" })?;
            let mut data = AlignedBuf::try_zeroed("packed w", len)?;
            layout.pack(&mut data, |p, c| w[p * n + c]);
            Ok(PackedStepGemm { layout, data })
        }

        /// `c [m, n] = a [m, k] · w` on `isa`.
        pub fn run(&self, isa: Isa, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
            let isa = isa.checked()?;
            let (k, n) = (self.layout.k, self.layout.group_width);
            if m == 0 {
                return Err(Error::ZeroDim { what: "m" });
            }
            check_len("a [m, k]", a, mul_len("a [m, k]", m, k)?)?;
            check_len("c [m, n]", c, mul_len("c [m, n]", m, n)?)?;
            f32::step_gemm(
                isa.resolve(),
                m,
                k,
                Operand { data: a, ld: k },
                PackedRef::all(&self.data, self.layout),
                c,
                n,
                Accumulate::No,
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::all_finite;
    use super::bench_support::PackedStepGemm;
    use crate::Error;

    /// `k·n` past `usize` is an error, not a wrapped length that passes the length check
    /// and then panics (or, in a debug build, an overflow panic).
    #[test]
    fn packed_step_gemm_sizes_that_overflow_are_errors() {
        for (k, n) in [(1 << 32, 1 << 32), (usize::MAX, 2), (2, usize::MAX)] {
            let r = PackedStepGemm::new(&[], k, n);
            assert!(
                matches!(r, Err(Error::SizeOverflow { .. })),
                "k = {k}, n = {n}: {:?}",
                r.err()
            );
        }
    }

    /// `m·k` or `m·n` past `usize` in `run` is an error too, not a wrapped length.
    #[test]
    fn packed_step_gemm_runs_whose_sizes_overflow_are_errors() {
        let g = PackedStepGemm::new(&[1.0; 4], 2, 2).unwrap();
        for m in [1 << 63, usize::MAX] {
            let r = g.run(crate::Isa::Portable, m, &[], &mut []);
            assert!(
                matches!(r, Err(Error::SizeOverflow { .. })),
                "m = {m}: {r:?}"
            );
        }
    }

    #[test]
    fn all_finite_flags_every_non_finite_value() {
        assert!(all_finite::<f32>(&[]));
        assert!(all_finite(&[
            0.0f32,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::from_bits(1)
        ]));
        assert!(all_finite(&[f64::MAX, f64::MIN_POSITIVE]));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![1.0f32; 9];
            v[8] = bad;
            assert!(!all_finite(&v), "{bad}");
            v[8] = 1.0;
            v[0] = bad;
            assert!(!all_finite(&v), "{bad}");
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!all_finite(&[0.5, bad, 0.5]), "{bad}");
        }
    }
}
