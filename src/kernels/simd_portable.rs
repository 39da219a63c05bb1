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
        // The algorithm of `Avx2F32::sigmoid`; see the comments there.
        let one = f32x8::ONE;
        let zq = x | f32x8::splat(-0.0);
        let z_min = f32x8::splat(EXP_Z_MIN);
        // NaN becomes EXP_Z_MIN too and enters only through `one_or_nan`, as on AVX2.
        let z = zq.simd_ge(z_min).select(zq, z_min);
        let one_or_nan = zq.is_nan().select(zq, one);
        let biased = z.mul_add(f32x8::splat(8.0 * LOG2E), f32x8::splat(EXP8_MAGIC_BIAS));
        let m = biased - f32x8::splat(EXP8_MAGIC_BIAS);
        let bits = cast::<f32x8, i32x8>(biased);
        // The table lookup, lane by lane (`wide` has no lane permute).
        let adj = i32x8::from(bits.to_array().map(|b| EXP2_K8_ADJ[(b & 7) as usize]));
        let scale: f32x8 = cast((bits << 20_u32) + adj);
        let r = m.mul_add(f32x8::splat(-LN2_8_HI), z);
        let r = m.mul_add(f32x8::splat(-LN2_8_LO), r);
        let s23 = f32x8::splat(EXP8_S3).mul_add(r, f32x8::splat(EXP8_S2));
        let q = s23.mul_add(r * r, r);
        let e = q.mul_add(scale, scale);
        let den = q.mul_add(scale, scale + one_or_nan);
        let num = x.is_sign_negative().select(e, one);
        let num = x.simd_lt(z_min).select(f32x8::ZERO, num);
        num / den
    }

    #[inline(always)]
    fn tanh(self, x: f32x8) -> f32x8 {
        // The algorithm of `Avx2F32::tanh`; see the comments there.
        let one = f32x8::ONE;
        let sign_bit = f32x8::splat(-0.0);
        let a = x.abs();
        let sign = x & sign_bit;
        // Selects rather than `max`/`min` so that NaN stays NaN.
        let tiny = f32x8::splat(TANH_TINY);
        let one_from = f32x8::splat(TANH_ONE_FROM);
        let ac = a.simd_lt(tiny).select(tiny, a);
        let ac = ac.simd_gt(one_from).select(one_from, ac);
        let biased = ac.mul_add(f32x8::splat(-2.0 * LOG2E), f32x8::splat(EXP_MAGIC_BIAS));
        let n = biased - f32x8::splat(EXP_MAGIC_BIAS);
        let scale: f32x8 = cast(cast::<f32x8, i32x8>(biased) << 23_u32);
        let h = n.mul_add(f32x8::splat(-HALF_LN2), -ac);
        let h2 = h * h;
        let e23 = f32x8::splat(TANH_E3).mul_add(h, f32x8::splat(TANH_E2));
        let e45 = f32x8::splat(TANH_E5).mul_add(h, f32x8::splat(TANH_E4));
        let t = f32x8::splat(TANH_E6).mul_add(h2, e45);
        let t = t.mul_add(h2, e23);
        let em1 = t.mul_add(h2, h + h);
        let num = (-scale).mul_add(em1, one - scale);
        let den = scale.mul_add(em1, one + scale);
        let r = num / den;
        // min(r, a), with a (NaN or not) unless r < a.
        r.simd_lt(a).select(r, a) | sign
    }
}
