//! `clip_grad_norm` and `clip_grad_value` against an f64 model, over gradients of any size
//! (raw bit patterns, and magnitudes from 2^-1074 to f64::MAX so that squares overflow and
//! underflow), f32 and f64, any number of tensors (empty ones too) and any `max_norm`:
//!
//! - a NaN or ±inf element, or a `max_norm` not positive and finite, is `InvalidArgument` with
//!   every gradient untouched (bit for bit);
//! - otherwise the norm is the model's (for f32 gradients the f64 sum of their exact squares,
//!   for f64 ones the sum of squares scaled by the largest magnitude) rounded to `F` within a
//!   relative `(n + 8)·2^-53` plus one rounding to `F`, or `F::MAX` where the model's norm is
//!   past it; and each element is `g · max_norm / norm` (when `norm > max_norm`, else `g`)
//!   within two roundings of `F` plus `(n + 8)·2^-53` relative (the factor's error), or an
//!   absolute `2^-1074` (a product in the subnormal range);
//! - `clip_grad_value`: each element clamped to `[-v, v]`, NaN kept, exactly; a negative or
//!   non-finite `v` is an error with nothing changed.
#![no_main]

use arbitrary::Unstructured;
use fused_rnn::{Error, Float, clip_grad_norm, clip_grad_value};
use libfuzzer_sys::fuzz_target;

/// One gradient value from the input: raw bits, or a sign, a power of two over the whole f64
/// range and a mantissa.
fn value(u: &mut Unstructured<'_>, f32_only: bool) -> arbitrary::Result<f64> {
    Ok(if u.ratio(1, 4)? {
        if f32_only {
            f64::from(f32::from_bits(u.arbitrary()?))
        } else {
            f64::from_bits(u.arbitrary()?)
        }
    } else {
        let (lo, hi) = if f32_only { (-149, 127) } else { (-1074, 1023) };
        let e: i32 = u.int_in_range(lo..=hi)?;
        let m = 1.0 + f64::from(u.arbitrary::<u16>()?) / 65536.0;
        let s = if u.arbitrary()? { -1.0 } else { 1.0 };
        s * m * 2f64.powi(e)
    })
}

/// The f64 model of the norm of `all` (finite values) as `(m, e)`, the norm being `m·2^e`
/// (kept apart so that a norm past f64's range still has a value): exact squares of f32 values
/// summed in f64 where `F` is f32, else the sum of squares scaled by the largest magnitude.
fn model_norm<F: Float>(all: &[f64]) -> (f64, i32) {
    if F::NAME == "f32" {
        return (all.iter().map(|v| v * v).sum::<f64>().sqrt(), 0);
    }
    let m = all.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    if m == 0.0 {
        return (0.0, 0);
    }
    // Scale by a power of two near m so that the ratios are exact.
    let k = m.log2().floor() as i32;
    let s: f64 = all.iter().map(|v| scale(*v, -k).powi(2)).sum();
    (s.sqrt(), k)
}

/// `v · 2^e`, in two steps so that neither factor overflows or underflows alone.
fn scale(v: f64, e: i32) -> f64 {
    v * 2f64.powi(e / 2) * 2f64.powi(e - e / 2)
}

/// `x · a / (bm·2^be)` without intermediate overflow or underflow (the factor alone can be
/// below f64's range, the norm past it): mantissas and exponents apart, one scaling at the
/// end. `x`, `a` and `bm` are finite and nonzero but for `x`.
fn mul_div(x: f64, a: f64, (bm, be): (f64, i32)) -> f64 {
    if x == 0.0 {
        return x * a.signum();
    }
    let exp = |v: f64| v.abs().log2().floor() as i32;
    let (ex, ea, eb) = (exp(x), exp(a), exp(bm));
    let m = scale(x, -ex) * scale(a, -ea) / scale(bm, -eb);
    scale(m, ex + ea - eb - be)
}

fn run<F: Float>(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let f32_only = F::NAME == "f32";
    let tensors = u.int_in_range(0..=4)?;
    let mut grads: Vec<Vec<F>> = Vec::new();
    for _ in 0..tensors {
        let n = u.int_in_range(0..=16)?;
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            t.push(F::from_f64(value(u, f32_only)?));
        }
        grads.push(t);
    }
    let max_norm = F::from_f64(value(u, f32_only)?.abs());
    let max_norm = if u.ratio(1, 8)? { -max_norm } else { max_norm };
    let clip_value = F::from_f64(value(u, f32_only)?);
    let before: Vec<Vec<F>> = grads.clone();
    let all: Vec<f64> = before.iter().flatten().map(|v| v.to_f64()).collect();
    let bits =
        |g: &[Vec<F>]| -> Vec<u64> { g.iter().flatten().map(|v| v.to_f64().to_bits()).collect() };

    // clip_grad_norm.
    let mut views: Vec<&mut [F]> = grads.iter_mut().map(|t| &mut t[..]).collect();
    let r = clip_grad_norm(&mut views, max_norm);
    let mn = max_norm.to_f64();
    let refused = !(mn > 0.0 && mn.is_finite()) || all.iter().any(|v| !v.is_finite());
    if refused {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "expected InvalidArgument, got {r:?}"
        );
        assert_eq!(
            bits(&grads),
            bits(&before),
            "a refused clip changed the gradients"
        );
    } else {
        let got = r.expect("finite gradients and max_norm").to_f64();
        let (nm, ne) = model_norm::<F>(&all);
        let want = scale(nm, ne);
        let n = all.len() as f64;
        let rel = (n + 8.0) * f64::EPSILON;
        let max_f = F::MAX.to_f64();
        // F's smallest subnormal: a value rounded into that range is off by up to half of it.
        let tiny = if f32_only {
            f64::from(f32::from_bits(1))
        } else {
            f64::from_bits(1)
        };
        if want > max_f * (1.0 + rel) {
            assert_eq!(got, max_f, "norm past F::MAX: {want:e}");
        } else {
            // A norm in F's subnormal range rounds to a multiple of F's smallest subnormal.
            let tol = want * (rel + F::EPSILON.to_f64()) + tiny;
            assert!(
                (got - want).abs() <= tol || (want > max_f && got == max_f),
                "norm {got:e}, model {want:e}"
            );
        }
        assert!(got >= 0.0 && got.is_finite(), "norm {got:e}");
        // `want` may be infinite (a norm past f64's range): it is then above any max_norm.
        if want > mn {
            for (k, (g, x)) in grads.iter().flatten().zip(&all).enumerate() {
                let w = mul_div(*x, mn, (nm, ne));
                let tol = w.abs() * (2.0 * F::EPSILON.to_f64() + 2.0 * rel) + tiny;
                let g = g.to_f64();
                assert!(
                    (g - w).abs() <= tol,
                    "element {k}: {x:e} clipped to {g:e}, model {w:e} (norm {want:e}, max {mn:e})"
                );
            }
        } else {
            assert_eq!(
                bits(&grads),
                bits(&before),
                "norm {want:e} <= {mn:e}: nothing changes"
            );
        }
    }

    // clip_grad_value.
    let mut grads = before.clone();
    let mut views: Vec<&mut [F]> = grads.iter_mut().map(|t| &mut t[..]).collect();
    let v = clip_value.to_f64();
    let r = clip_grad_value(&mut views, clip_value);
    if !(v >= 0.0 && v.is_finite()) {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "clip value {v:e}: expected InvalidArgument, got {r:?}"
        );
        assert_eq!(bits(&grads), bits(&before));
    } else {
        r.expect("a finite clip value >= 0");
        for (g, x) in grads.iter().flatten().zip(before.iter().flatten()) {
            let (g, x) = (g.to_f64(), x.to_f64());
            if x.is_nan() {
                assert!(g.is_nan(), "NaN clamped to {g:e}");
            } else {
                assert_eq!(g, x.clamp(-v, v), "{x:e} clamped to {v:e}");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = if u.arbitrary::<bool>().unwrap_or(false) {
        run::<f64>(&mut u)
    } else {
        run::<f32>(&mut u)
    };
});
