//! [`Avx2F32`]: the f32 operations on `__m256` with AVX2 and FMA intrinsics.
//!
//! Every method is `#[inline(always)]` and meant to be inlined into a `#[target_feature(enable =
//! "avx2,fma")]` function (the dispatch entries in [`crate::activation`] and the fused kernels);
//! there, the intrinsics inline into single instructions. The struct holds an
//! [`Avx2FmaToken`], so a value exists only after run-time detection found AVX2 and FMA: this is
//! what makes the intrinsic calls below sound.
//!
//! `sigmoid` and `tanh` use the same algorithm and constants as `PortableF32`
//! (`simd_portable.rs`), with fused multiply-adds.

use core::arch::x86_64::*;

use super::activation_consts::*;
use super::isa::Avx2FmaToken;
use super::simd::SimdOps;

/// Eight f32 lanes in a `__m256`; constructible only from an [`Avx2FmaToken`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2F32(Avx2FmaToken);

impl Avx2F32 {
    /// The AVX2+FMA operations, proven available by `token`.
    #[inline(always)]
    pub(crate) fn new(token: Avx2FmaToken) -> Self {
        Avx2F32(token)
    }

    /// `e^z` for `z <= 0` (or NaN), never subnormal: `z` is clamped to [`EXP_Z_MIN`] first, so
    /// the result is at least `2^-126`; callers handle `z < EXP_Z_MIN` themselves.
    #[inline(always)]
    fn exp_nonpositive(self, z: __m256) -> __m256 {
        // SAFETY: `self` holds an `Avx2FmaToken`, so the CPU supports AVX, AVX2 and FMA; these
        // intrinsics only compute on registers.
        unsafe {
            // max(EXP_Z_MIN, z) returns its second operand, z, when z is NaN.
            let z = _mm256_max_ps(_mm256_set1_ps(EXP_Z_MIN), z);
            // n = round(z * log2 e), with n + 127 in the low mantissa bits of `biased`.
            let bias = _mm256_set1_ps(EXP_MAGIC_BIAS);
            let biased = _mm256_fmadd_ps(z, _mm256_set1_ps(LOG2E), bias);
            let n = _mm256_sub_ps(biased, bias);
            // 2^n: n + 127 is in 1..=127 because EXP_Z_MIN <= z <= 0.
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(biased)));
            // r = z - n ln2 in two steps (Cody–Waite): n * LN2_HI is exact.
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), z);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_C6);
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C5));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C4));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C3));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C2));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C1));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
            _mm256_mul_ps(p, scale)
        }
    }
}

impl SimdOps for Avx2F32 {
    type Elem = f32;
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        assert!(s.len() >= 8, "load needs 8 elements, got {}", s.len());
        // SAFETY: the token proves AVX; the assert above makes the 8 read elements in bounds,
        // and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        assert!(s.len() >= 8, "store needs 8 elements, got {}", s.len());
        // SAFETY: the token proves AVX; the assert above makes the 8 written elements in
        // bounds (of an exclusively borrowed slice), and `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the token in `self` proves FMA is available.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn relu(self, v: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe {
            // max(0, v) returns its second operand, v, when v is NaN.
            _mm256_max_ps(_mm256_setzero_ps(), v)
        }
    }
    #[inline(always)]
    fn step(self, v: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        unsafe {
            // Ordered compare: false (all-zero mask) for NaN.
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_setzero_ps());
            _mm256_and_ps(gt, _mm256_set1_ps(1.0))
        }
    }

    #[inline(always)]
    fn sigmoid(self, x: __m256) -> __m256 {
        // z = -|x|; e = e^z is in (0, 1], so e / (1 + e) keeps full relative accuracy.
        // SAFETY: the token in `self` proves AVX is available.
        let z = unsafe { _mm256_or_ps(x, _mm256_set1_ps(-0.0)) };
        let e = self.exp_nonpositive(z);
        // SAFETY: the token in `self` proves AVX is available.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            // sigmoid(x) = e / (1 + e) for x <= 0 and 1 - e / (1 + e) = 1 / (1 + e) for x > 0:
            // one division, with the numerator chosen by the sign bit of x (`blendv` reads only
            // that bit: +0 gives 1/2, NaN gives NaN either way).
            let num = _mm256_blendv_ps(one, e, x);
            // Exactly 0 where x < EXP_Z_MIN, i.e. where e^x would be subnormal (and for -inf).
            let flush = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_Z_MIN));
            let num = _mm256_andnot_ps(flush, num);
            _mm256_div_ps(num, _mm256_add_ps(one, e))
        }
    }

    #[inline(always)]
    fn tanh(self, x: __m256) -> __m256 {
        // SAFETY: the token in `self` proves AVX is available.
        let (a, sign) = unsafe {
            let sign_bit = _mm256_set1_ps(-0.0);
            (_mm256_andnot_ps(sign_bit, x), _mm256_and_ps(sign_bit, x))
        };
        // Large branch: 1 - 2/(e^(2a) + 1), computed as 1 - 2 e/(1 + e) with e = e^(-2a) (the
        // same value; this form needs no overflow clamp).
        // SAFETY: the token in `self` proves AVX is available.
        let e = self.exp_nonpositive(unsafe { _mm256_mul_ps(a, _mm256_set1_ps(-2.0)) });
        // SAFETY: the token in `self` proves AVX and FMA are available.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            let large = _mm256_fnmadd_ps(
                _mm256_set1_ps(2.0),
                _mm256_div_ps(e, _mm256_add_ps(one, e)),
                one,
            );
            // Small branch: a + a^3 P(a^2). Below TANH_TINY the correction is zeroed (it would
            // round away) and a^2 is taken of TANH_TINY, so no intermediate is subnormal.
            let tiny = _mm256_set1_ps(TANH_TINY);
            let a_is_tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(a, tiny);
            let ap = _mm256_max_ps(a, tiny);
            let t = _mm256_mul_ps(ap, ap);
            let mut p = _mm256_set1_ps(TANH_T4);
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(TANH_T3));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(TANH_T2));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(TANH_T1));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(TANH_T0));
            let corr = _mm256_andnot_ps(a_is_tiny, _mm256_mul_ps(p, t));
            let small = _mm256_fmadd_ps(a, corr, a);
            // NaN fails both ordered compares and takes `large`, which is NaN.
            let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(TANH_SPLIT));
            let r = _mm256_blendv_ps(large, small, is_small);
            let is_one = _mm256_cmp_ps::<_CMP_GE_OQ>(a, _mm256_set1_ps(TANH_ONE_FROM));
            let r = _mm256_blendv_ps(r, one, is_one);
            _mm256_or_ps(r, sign)
        }
    }
}
