//! [`Avx512F32`]: the f32 operations on `__m512` with AVX-512F intrinsics, for the elementwise
//! kernels and the activation slices of [`Isa::Avx512`](crate::Isa::Avx512).
//!
//! `sigmoid` and `tanh` are [`Avx2F32`](super::simd_avx2::Avx2F32)'s, operation for operation,
//! on 16 lanes: the same fused multiply-adds, divisions, min/max (with the same operand order,
//! so the same NaN choices), the same table and bit manipulations. Each lane's result is
//! therefore bit for bit the AVX2 one (tests compare them). Where AVX2 has an instruction
//! AVX-512F lacks, the replacement computes the same bits: `blendv` on the sign bit becomes a
//! sign-bit test mask and a masked blend, `andnot` with a compare mask a blend with `+0.0`,
//! float logic integer logic on the same bits. The 8-entry table is read by a 16-lane permute
//! of the table written twice (it reads the low 4 bits of each index; bit 3 is not part of the
//! table index, so both halves must be the same table).
//!
//! Why: on Zen 4 a 512-bit operation runs as two 256-bit halves, so the throughput per element
//! is the AVX2 one, but the AVX2 loop is latency bound (see `Avx2F32::interleave`): with four
//! 16-lane vectors in flight, twice as many elements overlap in the same out-of-order window.
//!
//! Every method is `#[inline(always)]` and meant to be inlined into a
//! `#[target_feature(enable = "avx512f,avx2,fma")]` function; the struct holds an
//! [`Avx512Token`], so a value exists only after run-time detection found AVX-512F: this is
//! what makes the intrinsic calls below sound.

use core::arch::asm;
use core::arch::x86_64::*;

use super::activation_consts::*;
use super::isa::Avx512Token;
use super::simd::SimdOps;

/// Sixteen f32 lanes in a `__m512`; constructible only from an [`Avx512Token`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512F32(Avx512Token);

impl Avx512F32 {
    /// The AVX-512F operations, proven available by `token`.
    #[inline(always)]
    pub(crate) fn new(token: Avx512Token) -> Self {
        Avx512F32(token)
    }

    /// The scheduling fence of `Avx2F32::interleave`, for four 512-bit vectors.
    #[inline(always)]
    fn interleave<const U: usize>(self, v: &mut [__m512; U]) {
        if let Ok(v4) = <&mut [__m512; 4]>::try_from(&mut v[..]) {
            // SAFETY: the token in `self` proves AVX-512F is available.
            unsafe { interleave4(v4) }
        }
    }
}

/// `a | b` on the bits.
#[inline(always)]
unsafe fn or(a: __m512, b: __m512) -> __m512 {
    // SAFETY: the caller runs with AVX-512F (all callers hold an Avx512Token).
    unsafe {
        _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(a),
            _mm512_castps_si512(b),
        ))
    }
}

/// `!a & b` on the bits.
#[inline(always)]
unsafe fn andnot(a: __m512, b: __m512) -> __m512 {
    // SAFETY: as in `or`.
    unsafe {
        _mm512_castsi512_ps(_mm512_andnot_si512(
            _mm512_castps_si512(a),
            _mm512_castps_si512(b),
        ))
    }
}

/// `a & b` on the bits.
#[inline(always)]
unsafe fn and(a: __m512, b: __m512) -> __m512 {
    // SAFETY: as in `or`.
    unsafe {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(a),
            _mm512_castps_si512(b),
        ))
    }
}

impl SimdOps for Avx512F32 {
    type Elem = f32;
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        assert!(s.len() >= 16, "load needs 16 elements, got {}", s.len());
        // SAFETY: the token proves AVX-512F; the assert above makes the 16 read elements in
        // bounds, and `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m512) {
        assert!(s.len() >= 16, "store needs 16 elements, got {}", s.len());
        // SAFETY: the token proves AVX-512F; the assert above makes the 16 written elements in
        // bounds (of an exclusively borrowed slice), and `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F (which has FMA) is available.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn relu(self, v: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe {
            // max(0, v) returns its second operand, v, when v is NaN.
            _mm512_max_ps(_mm512_setzero_ps(), v)
        }
    }
    #[inline(always)]
    fn step(self, v: __m512) -> __m512 {
        // SAFETY: the token in `self` proves AVX-512F is available.
        unsafe {
            // Ordered compare: false for NaN.
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_blend_ps(gt, _mm512_setzero_ps(), _mm512_set1_ps(1.0))
        }
    }

    #[inline(always)]
    fn sigmoid(self, x: __m512) -> __m512 {
        let mut v = [x];
        self.sigmoid_n(&mut v);
        v[0]
    }

    #[inline(always)]
    fn tanh(self, x: __m512) -> __m512 {
        let mut v = [x];
        self.tanh_n(&mut v);
        v[0]
    }

    #[inline(always)]
    fn sigmoid_n<const U: usize>(self, v: &mut [__m512; U]) {
        // SAFETY: the token in `self` proves AVX-512F is available; these intrinsics only
        // compute on registers. (The comments of `Avx2F32::sigmoid_n` explain each step.)
        unsafe {
            let x = *v;
            let one = _mm512_set1_ps(1.0);
            let bias = _mm512_set1_ps(EXP8_MAGIC_BIAS);
            let sign_bit = _mm512_set1_ps(-0.0);
            let (mut z, mut biased, mut one_or_nan) = (x, x, x);
            for u in 0..U {
                let zu = or(x[u], sign_bit);
                z[u] = _mm512_max_ps(zu, _mm512_set1_ps(EXP_Z_MIN));
                one_or_nan[u] = _mm512_max_ps(one, zu);
                biased[u] = _mm512_fmadd_ps(z[u], _mm512_set1_ps(8.0 * LOG2E), bias);
            }
            self.interleave(&mut biased);
            let t = EXP2_K8_ADJ;
            let table = _mm512_setr_epi32(
                t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[0], t[1], t[2], t[3], t[4], t[5],
                t[6], t[7],
            );
            let (mut scale, mut r) = (x, x);
            for u in 0..U {
                let m = _mm512_sub_ps(biased[u], bias);
                let bits = _mm512_castps_si512(biased[u]);
                let adj = _mm512_permutexvar_epi32(bits, table);
                scale[u] =
                    _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32::<20>(bits), adj));
                let ru = _mm512_fnmadd_ps(m, _mm512_set1_ps(LN2_8_HI), z[u]);
                r[u] = _mm512_fnmadd_ps(m, _mm512_set1_ps(LN2_8_LO), ru);
            }
            self.interleave(&mut r);
            let mut q = x;
            for u in 0..U {
                let s23 = _mm512_fmadd_ps(_mm512_set1_ps(EXP8_S3), r[u], _mm512_set1_ps(EXP8_S2));
                q[u] = _mm512_fmadd_ps(s23, _mm512_mul_ps(r[u], r[u]), r[u]);
            }
            self.interleave(&mut q);
            for u in 0..U {
                let e = _mm512_fmadd_ps(q[u], scale[u], scale[u]);
                let den = _mm512_fmadd_ps(q[u], scale[u], _mm512_add_ps(scale[u], one_or_nan[u]));
                // `blendv(one, e, x)`: e where x's sign bit is set.
                let negative = _mm512_test_epi32_mask(
                    _mm512_castps_si512(x[u]),
                    _mm512_castps_si512(sign_bit),
                );
                let num = _mm512_mask_blend_ps(negative, one, e);
                // `andnot(x < EXP_Z_MIN, num)`: +0 there.
                let flush = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x[u], _mm512_set1_ps(EXP_Z_MIN));
                let num = _mm512_mask_blend_ps(flush, num, _mm512_setzero_ps());
                v[u] = _mm512_div_ps(num, den);
            }
        }
    }

    #[inline(always)]
    fn tanh_n<const U: usize>(self, v: &mut [__m512; U]) {
        // SAFETY: the token in `self` proves AVX-512F is available; these intrinsics only
        // compute on registers. (The comments of `Avx2F32::tanh_n` explain each step.)
        unsafe {
            let x = *v;
            let sign_bit = _mm512_set1_ps(-0.0);
            let one = _mm512_set1_ps(1.0);
            let bias = _mm512_set1_ps(EXP_MAGIC_BIAS);
            let (mut a, mut ac) = (x, x);
            for u in 0..U {
                a[u] = andnot(sign_bit, x[u]);
                let tiny = _mm512_set1_ps(TANH_TINY);
                ac[u] = _mm512_min_ps(_mm512_set1_ps(TANH_ONE_FROM), _mm512_max_ps(tiny, a[u]));
            }
            self.interleave(&mut ac);
            let mut biased = x;
            for u in 0..U {
                biased[u] = _mm512_fmadd_ps(ac[u], _mm512_set1_ps(-2.0 * LOG2E), bias);
            }
            self.interleave(&mut biased);
            let (mut scale, mut h) = (x, x);
            for u in 0..U {
                let n = _mm512_sub_ps(biased[u], bias);
                scale[u] =
                    _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(biased[u])));
                h[u] = _mm512_fnmsub_ps(n, _mm512_set1_ps(HALF_LN2), ac[u]);
            }
            self.interleave(&mut h);
            let mut em1 = x;
            for u in 0..U {
                let h = h[u];
                let h2 = _mm512_mul_ps(h, h);
                let e23 = _mm512_fmadd_ps(_mm512_set1_ps(TANH_E3), h, _mm512_set1_ps(TANH_E2));
                let e45 = _mm512_fmadd_ps(_mm512_set1_ps(TANH_E5), h, _mm512_set1_ps(TANH_E4));
                let t = _mm512_fmadd_ps(_mm512_set1_ps(TANH_E6), h2, e45);
                let t = _mm512_fmadd_ps(t, h2, e23);
                em1[u] = _mm512_fmadd_ps(t, h2, _mm512_add_ps(h, h));
            }
            self.interleave(&mut em1);
            let mut r = x;
            for u in 0..U {
                let num = _mm512_fnmadd_ps(scale[u], em1[u], _mm512_sub_ps(one, scale[u]));
                let den = _mm512_fmadd_ps(scale[u], em1[u], _mm512_add_ps(one, scale[u]));
                r[u] = _mm512_div_ps(num, den);
            }
            self.interleave(&mut r);
            for u in 0..U {
                v[u] = or(_mm512_min_ps(r[u], a[u]), and(sign_bit, x[u]));
            }
        }
    }
}

/// The fence of [`Avx512F32::interleave`] for four vectors (see `interleave4` of the AVX2
/// path).
///
/// # Safety
/// The CPU must support AVX-512F (for the `zmm` register operands).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn interleave4(v: &mut [__m512; 4]) {
    let [a, b, c, d] = v;
    // SAFETY: the template is empty (a comment naming the operands): no instruction runs, no
    // memory, stack or flags are touched; the operands stay in their registers.
    unsafe {
        asm!(
            "/* {0} {1} {2} {3} */",
            inout(zmm_reg) * a,
            inout(zmm_reg) * b,
            inout(zmm_reg) * c,
            inout(zmm_reg) * d,
            options(nomem, nostack, preserves_flags)
        );
    }
}
