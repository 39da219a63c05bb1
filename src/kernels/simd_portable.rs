//! [`PortableF32`]: the f32 operations on `wide::f32x8`, with whatever instructions `wide` was
//! compiled for (SSE2 on a plain x86-64 build, where `mul_add` is a multiply then an add).
//!
//! `sigmoid` and `tanh` are the same algorithm, with the same constants
//! ([`activation_consts`](super::activation_consts)), as `Avx2F32` in `simd_avx2.rs`; see there
//! and in [`crate::activation`] for the derivation and the error bound. Everything is
//! branchless (lane selects), unlike `wide`'s own `exp`/`tanh` that exit early on whole-vector
//! conditions.

use wide::{bytemuck::cast, f32x8, i32x8};

use super::activation_consts::*;
use super::simd::SimdOps;

/// `wide::f32x8`, eight f32 lanes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortableF32;

/// `e^z` for `z <= 0` (or NaN), never subnormal: `z` is clamped to [`EXP_Z_MIN`] first, so
/// the result is at least `2^-126`; callers handle `z < EXP_Z_MIN` themselves.
#[inline(always)]
fn exp_nonpositive(z: f32x8) -> f32x8 {
    let z_min = f32x8::splat(EXP_Z_MIN);
    // A select rather than `max` so that NaN stays NaN.
    let z = z.simd_lt(z_min).select(z_min, z);
    // n = round(z * log2 e), with n + 127 in the low mantissa bits of `biased`.
    let biased = z.mul_add(f32x8::splat(LOG2E), f32x8::splat(EXP_MAGIC_BIAS));
    let n = biased - f32x8::splat(EXP_MAGIC_BIAS);
    // 2^n: n + 127 is in 1..=127 because EXP_Z_MIN <= z <= 0.
    let scale: f32x8 = cast(cast::<f32x8, i32x8>(biased) << 23_u32);
    // r = z - n ln2 in two steps (Cody–Waite): n * LN2_HI is exact.
    let r = n.mul_add(f32x8::splat(-LN2_HI), z);
    let r = n.mul_add(f32x8::splat(-LN2_LO), r);
    let mut p = f32x8::splat(EXP_C6);
    p = p.mul_add(r, f32x8::splat(EXP_C5));
    p = p.mul_add(r, f32x8::splat(EXP_C4));
    p = p.mul_add(r, f32x8::splat(EXP_C3));
    p = p.mul_add(r, f32x8::splat(EXP_C2));
    p = p.mul_add(r, f32x8::splat(EXP_C1));
    p = p.mul_add(r, f32x8::ONE);
    p * scale
}

impl SimdOps for PortableF32 {
    type Elem = f32;
    type V = f32x8;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32x8 {
        let a: [f32; 8] = s[..8].try_into().expect("a slice of length 8");
        f32x8::from(a)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: f32x8) {
        s[..8].copy_from_slice(&v.to_array());
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn mul_add(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn relu(self, v: f32x8) -> f32x8 {
        // `v < 0` is false for NaN, which therefore passes through.
        v.simd_lt(f32x8::ZERO).select(f32x8::ZERO, v)
    }
    #[inline(always)]
    fn step(self, v: f32x8) -> f32x8 {
        v.simd_gt(f32x8::ZERO).select(f32x8::ONE, f32x8::ZERO)
    }

    #[inline(always)]
    fn sigmoid(self, x: f32x8) -> f32x8 {
        let sign_bit = f32x8::splat(-0.0);
        // z = -|x|; e = e^z is in (0, 1], so e / (1 + e) keeps full relative accuracy.
        let z = x | sign_bit;
        let e = exp_nonpositive(z);
        // sigmoid(x) = e / (1 + e) for x <= 0 and 1 - e / (1 + e) = 1 / (1 + e) for x > 0: one
        // division, with the numerator chosen by the sign bit (+0 gives 1/2, NaN gives NaN).
        let num = x.is_sign_negative().select(e, f32x8::ONE);
        // Exactly 0 where x < EXP_Z_MIN, i.e. where e^x would be subnormal (and for -inf).
        let num = x.simd_lt(f32x8::splat(EXP_Z_MIN)).select(f32x8::ZERO, num);
        num / (f32x8::ONE + e)
    }

    #[inline(always)]
    fn tanh(self, x: f32x8) -> f32x8 {
        let sign_bit = f32x8::splat(-0.0);
        let a = x.abs();
        let sign = x & sign_bit;
        // Large branch: 1 - 2/(e^(2a) + 1), computed as 1 - 2 e/(1 + e) with e = e^(-2a) (the
        // same value; this form needs no overflow clamp).
        let e = exp_nonpositive(a * f32x8::splat(-2.0));
        let large = (e / (f32x8::ONE + e)).mul_add(f32x8::splat(-2.0), f32x8::ONE);
        // Small branch: a + a^3 P(a^2). Below TANH_TINY the correction is zeroed (it would round
        // away) and a^2 is taken of TANH_TINY, so no intermediate is subnormal.
        let tiny = f32x8::splat(TANH_TINY);
        let a_is_tiny = a.simd_lt(tiny);
        let ap = a_is_tiny.select(tiny, a);
        let t = ap * ap;
        let mut p = f32x8::splat(TANH_T4);
        p = p.mul_add(t, f32x8::splat(TANH_T3));
        p = p.mul_add(t, f32x8::splat(TANH_T2));
        p = p.mul_add(t, f32x8::splat(TANH_T1));
        p = p.mul_add(t, f32x8::splat(TANH_T0));
        let corr = a_is_tiny.select(f32x8::ZERO, p * t);
        let small = a.mul_add(corr, a);
        // NaN fails both compares and takes `large`, which is NaN.
        let r = a.simd_lt(f32x8::splat(TANH_SPLIT)).select(small, large);
        let r = a.simd_ge(f32x8::splat(TANH_ONE_FROM)).select(f32x8::ONE, r);
        r | sign
    }
}
