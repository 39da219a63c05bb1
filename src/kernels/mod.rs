//! The only home of `unsafe` and `core::arch` code besides `gemm.rs`: vector operations,
//! activations and the fused per-step kernels. Each `unsafe` block states its `// SAFETY:`
//! argument beside it.

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
