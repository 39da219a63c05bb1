//! Per-element-type, per-ISA entry points of the fused step kernels.
//!
//! f64 runs the generic kernels on [`ScalarF64`] (std's accurate functions). f32 picks the
//! portable `wide` path, the AVX2+FMA path or the AVX-512 path from the layer's resolved
//! [`IsaToken`]; each AVX instantiation runs inside a `#[target_feature]` function so that the
//! `#[inline(always)]` kernel and its intrinsics inline into that instruction set's code. The
//! AVX-512 path runs the GEMMs on their own kernel (`step_gemm_avx512.rs`) and the elementwise
//! kernels on the generic ones with 16 lanes.

use super::isa::IsaToken;
use super::postgemm::{self, StepShape};
use super::simd::ScalarF64;
use super::simd_portable::PortableF32;
use super::step_gemm::{self, Accumulate, Operand, OperandTiles, PackedRef};
use crate::shape::RnnActivation;

/// Runs `f` with AVX2 and FMA enabled for code generation.
///
/// # Safety
/// The CPU must support AVX2 and FMA: callers hold an `Avx2FmaToken`, which only run-time
/// detection creates.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn with_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` with AVX-512F (besides AVX2 and FMA) enabled for code generation.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA: callers hold an `Avx512Token`, which only
/// run-time detection creates.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The AVX2+FMA instantiation of generic kernel `$name`, with AVX2 code generation.
macro_rules! avx2_kernel {
    ($t:expr, $name:ident($($arg:ident),*)) => {{
        let s = super::simd_avx2::Avx2F32::new($t);
        // SAFETY: the token is an Avx2FmaToken, created only after run-time detection found
        // AVX2 and FMA on this CPU.
        unsafe { with_avx2_fma(#[inline(always)] || $name(s, $($arg),*)) }
    }};
}

macro_rules! step_kernels {
    (
        gemm { $( $(#[$gdoc:meta])* fn $gname:ident($($garg:ident : $gty:ty),* $(,)?); )* }
        elementwise { $( $(#[$doc:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?); )* }
    ) => {
        /// The fused step kernels for one element type (see `step_gemm.rs` and `postgemm.rs`
        /// for each contract).
        pub trait StepKernels: Sized {
            /// Panel width of packed weights: two vectors of the kernels' lane count.
            const PANEL_WIDTH: usize;
            $( $(#[$gdoc])* #[allow(clippy::too_many_arguments)]
               fn $gname(isa: IsaToken, $($garg: $gty),*); )*
            $( $(#[$doc])* #[allow(clippy::too_many_arguments)]
               fn $name(isa: IsaToken, $($arg: $ty),*); )*
        }

        impl StepKernels for f64 {
            const PANEL_WIDTH: usize = 2;
            $( #[allow(clippy::too_many_arguments)]
               fn $gname(_isa: IsaToken, $($garg: $gty),*) {
                $gname(ScalarF64, $($garg),*)
            } )*
            $( #[allow(clippy::too_many_arguments)]
               fn $name(_isa: IsaToken, $($arg: $ty),*) {
                $name(ScalarF64, $($arg),*)
            } )*
        }

        impl StepKernels for f32 {
            // Both 256-bit f32 paths have 8 lanes; the AVX-512 GEMM reads a panel as one
            // 16-lane vector.
            const PANEL_WIDTH: usize = 16;
            // The GEMMs have an AVX-512 version.
            $( #[allow(clippy::too_many_arguments)]
               fn $gname(isa: IsaToken, $($garg: $gty),*) {
                match isa {
                    IsaToken::Portable => $gname(PortableF32, $($garg),*),
                    #[cfg(target_arch = "x86_64")]
                    IsaToken::Avx2Fma(t) => avx2_kernel!(t, $gname($($garg),*)),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `t` is an Avx512Token, created only after run-time detection
                    // found AVX-512F, AVX2 and FMA on this CPU.
                    IsaToken::Avx512(t) => unsafe {
                        with_avx512(#[inline(always)] || {
                            super::step_gemm_avx512::$gname(t, $($garg),*)
                        })
                    },
                    #[cfg(not(target_arch = "x86_64"))]
                    IsaToken::Avx2Fma(_) | IsaToken::Avx512(_) => $gname(PortableF32, $($garg),*),
                }
            } )*
            // The elementwise kernels are generic: AVX-512 runs them on 16 lanes, with the same
            // operations per lane as AVX2 (see `simd_avx512.rs`).
            $( #[allow(clippy::too_many_arguments)]
               fn $name(isa: IsaToken, $($arg: $ty),*) {
                match isa {
                    IsaToken::Portable => $name(PortableF32, $($arg),*),
                    #[cfg(target_arch = "x86_64")]
                    IsaToken::Avx2Fma(t) => avx2_kernel!(t, $name($($arg),*)),
                    #[cfg(target_arch = "x86_64")]
                    IsaToken::Avx512(t) => {
                        let s = super::simd_avx512::Avx512F32::new(t);
                        // SAFETY: `t` is an Avx512Token, created only after run-time detection
                        // found AVX-512F, AVX2 and FMA on this CPU.
                        unsafe { with_avx512(#[inline(always)] || $name(s, $($arg),*)) }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    IsaToken::Avx2Fma(_) | IsaToken::Avx512(_) => $name(PortableF32, $($arg),*),
                }
            } )*
        }
    };
}

use postgemm::{
    gru_reset_after_backward, gru_reset_after_forward, gru_reset_before_backward_candidate,
    gru_reset_before_backward_reset, gru_reset_before_forward_gates,
    gru_reset_before_forward_state, lstm_backward, lstm_forward, rnn_backward, rnn_forward,
};
use step_gemm::step_gemm;
// The macro calls the generic kernel by the entry's name; the tiled-A entry is the same
// generic kernel, instantiated for `OperandTiles`.
use step_gemm::step_gemm as step_gemm_tiles;

step_kernels! {
    gemm {
    /// Per-step GEMM `C (+)= A[m, k] · W` over packed weights.
    fn step_gemm(m: usize, k: usize, a: Operand<'_, Self>, w: PackedRef<'_, Self>, c: &mut [Self], ldc: usize, acc: Accumulate);
    /// [`step_gemm`](StepKernels::step_gemm) with A packed in row groups.
    fn step_gemm_tiles(m: usize, k: usize, a: OperandTiles<'_, Self>, w: PackedRef<'_, Self>, c: &mut [Self], ldc: usize, acc: Accumulate);
    }
    elementwise {
    /// RNN forward step.
    fn rnn_forward(sh: StepShape, act: RnnActivation, p: &[Self], acc: &[Self], bias: &[Self], h: &mut [Self]);
    /// LSTM forward step.
    fn lstm_forward(sh: StepShape, gates: &mut [Self], acc: &[Self], bias: &[Self], c_prev: &[Self], c: &mut [Self], h: &mut [Self]);
    /// GRU reset-after forward step.
    fn gru_reset_after_forward(sh: StepShape, gates: &mut [Self], acc: &[Self], bias: &[Self], b_hn: &[Self], h_prev: &[Self], h: &mut [Self], grid: &mut [Self]);
    /// GRU reset-before forward, gates part.
    fn gru_reset_before_forward_gates(sh: StepShape, gates: &mut [Self], acc_rz: &[Self], bias_rz: &[Self], h_prev: &[Self], rh: &mut [Self]);
    /// GRU reset-before forward, candidate and state part.
    fn gru_reset_before_forward_state(sh: StepShape, gates: &mut [Self], acc_n: &[Self], bias_n: &[Self], h_prev: &[Self], h: &mut [Self]);
    /// RNN backward step.
    fn rnn_backward(sh: StepShape, act: RnnActivation, h: &[Self], dh: &[Self], gates: &mut [Self]);
    /// LSTM backward step.
    fn lstm_backward(sh: StepShape, gates: &mut [Self], c_prev: &[Self], c: &[Self], dh: &[Self], dc: &mut [Self]);
    /// GRU reset-after backward step.
    fn gru_reset_after_backward(sh: StepShape, gates: &mut [Self], grid: &mut [Self], h_prev: &[Self], dh: &[Self], dh_prev: &mut [Self]);
    /// GRU reset-before backward, update and candidate part.
    fn gru_reset_before_backward_candidate(sh: StepShape, gates: &mut [Self], h_prev: &[Self], dh: &[Self], dh_prev: &mut [Self]);
    /// GRU reset-before backward, reset part.
    fn gru_reset_before_backward_reset(sh: StepShape, gates: &mut [Self], h_prev: &[Self], drh: &[Self], dh_prev: &mut [Self]);
    }
}

/// Rows of the projection per folded piece (see [`FoldKernels`]).
pub(crate) const FOLD_ROWS: usize = 8;

/// One piece of input projection to fold into a chunk of [`FoldKernels::gemv_fold`]: rows
/// `r0..r0 + FOLD_ROWS` of the projection, over panels `j..j + np` of the input weights' walk
/// (`np` 1 or 2), terms `k0..k0 + kp`. The first piece of a tile (`acc == No`) starts its sums
/// from zero, the others add to the stored partial sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldPiece {
    /// First projection row.
    pub r0: usize,
    /// First panel.
    pub j: usize,
    /// Panels, 1 or 2.
    pub np: usize,
    /// First term.
    pub k0: usize,
    /// Terms.
    pub kp: usize,
    /// Whether the piece adds to the partial sums of earlier ones.
    pub acc: Accumulate,
}

/// The batch-1 step GEMV with a piece of a later step's input projection folded into its
/// loop (`gemv_fold_avx512.rs`): f32 on AVX-512 only; elsewhere the pass projects every step
/// before the loop.
pub trait FoldKernels: Sized {
    /// Whether [`gemv_fold`](FoldKernels::gemv_fold) runs for this type on `isa` (by
    /// default, on none).
    fn folds(_isa: IsaToken) -> bool {
        false
    }
    /// `c = h · W` and the projection pieces `pieces(chunk)` (see `gemv_fold_avx512.rs`).
    /// Panics (a bug in the caller) unless `Self::folds(isa)`.
    #[allow(clippy::too_many_arguments)]
    fn gemv_fold(
        _isa: IsaToken,
        _k: usize,
        _h: &[Self],
        _w: PackedRef<'_, Self>,
        _c: &mut [Self],
        _x: Operand<'_, Self>,
        _w_ih: PackedRef<'_, Self>,
        _proj: &mut [Self],
        _ldp: usize,
        _pieces: &dyn Fn(usize) -> Option<FoldPiece>,
    ) {
        unreachable!("gemv_fold: no kernel for this type (FoldKernels::folds is false)")
    }
}

/// No f64 kernel: f64 passes project every step before the loop.
impl FoldKernels for f64 {}

impl FoldKernels for f32 {
    fn folds(isa: IsaToken) -> bool {
        matches!(isa, IsaToken::Avx512(_)) && cfg!(target_arch = "x86_64")
    }
    #[allow(clippy::too_many_arguments)]
    fn gemv_fold(
        isa: IsaToken,
        k: usize,
        h: &[f32],
        w: PackedRef<'_, f32>,
        c: &mut [f32],
        x: Operand<'_, f32>,
        w_ih: PackedRef<'_, f32>,
        proj: &mut [f32],
        ldp: usize,
        pieces: &dyn Fn(usize) -> Option<FoldPiece>,
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `t` is an Avx512Token, created only after run-time detection found
            // AVX-512F, AVX2 and FMA on this CPU.
            IsaToken::Avx512(t) => unsafe {
                with_avx512(
                    #[inline(always)]
                    || {
                        super::gemv_fold_avx512::gemv_fold(
                            t, k, h, w, c, x, w_ih, proj, ldp, pieces,
                        )
                    },
                )
            },
            _ => unreachable!("gemv_fold: only on AVX-512 (FoldKernels::folds is false)"),
        }
    }
}
