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
