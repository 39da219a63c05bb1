//! The only home of `core::arch`, `#[target_feature]` and `unsafe` code (besides the claims
//! primitive of the hidden-unit split, `exec/claims.rs`): vector operations, activations, the
//! step GEMMs, the fused post-GEMM kernels and the call into matrixmultiply. Each `unsafe`
//! block states its `// SAFETY:` argument beside it.

pub(crate) mod activation;
pub(crate) mod activation_consts;
pub(crate) mod dispatch;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemv_fold_avx512;
pub(crate) mod isa;
pub(crate) mod postgemm;
pub(crate) mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_avx512;
pub(crate) mod simd_portable;
pub(crate) mod step_gemm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod step_gemm_avx512;
pub(crate) mod strided_gemm;
