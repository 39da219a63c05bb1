//! Gradient clipping against an f64 model, over the whole exponent range of f32 and f64:
//! norms whose squares overflow or underflow, scales that underflow in `F`, norms past `F`'s
//! largest value, empty input, and the non-finite policies.
//!
//! Tolerances. f32: the model computes in f64 (an f32's square is exact in f64 and never
//! overflows or underflows there), so the model's f32 result is the exact value rounded once;
//! the crate's is within a few f64 ulps before its own rounding to f32, so the two are equal
//! or adjacent f32 values: at most 1 ulp apart (subnormals included). f64: the norm is a sum
//! of `n` squares, each way with at most `(n - 1)` roundings, halved by the square root, plus
//! the square root's and the scalings' own: `(n + 2)·ε` relative covers both sides. A clipped
//! element adds the scale's and the product's roundings (`+ 2ε`) and, where the result is
//! subnormal, half an ulp of 2^-1074 on each side.

use fused_rnn::{Error, clip_grad_norm, clip_grad_value};
use rand::RngExt;
use testkit::random::rng;

/// f32 values as integers that order like the values, `+0` and `-0` both 0, so that the
/// distance between two is their distance in ulps.
fn ord32(x: f32) -> i64 {
    let b = x.to_bits();
    let m = i64::from(b & 0x7fff_ffff);
    if b >> 31 == 1 { -m } else { m }
}

fn ulps32(a: f32, b: f32) -> i64 {
    (ord32(a) - ord32(b)).abs()
}

/// `x · 2^k`, exact unless the result overflows or is subnormal (in two steps, since `2^k`
/// alone need not be representable for `|k| > 1023`).
fn scale_pow2(x: f64, k: i32) -> f64 {
    let half = k / 2;
    x * 2f64.powi(half) * 2f64.powi(k - half)
}

/// The exponent `e` with `2^e <= |x| < 2^(e+1)` (subnormals included), for finite `x != 0`.
fn exponent(x: f64) -> i32 {
    let x = x.abs();
    if x >= f64::MIN_POSITIVE {
        ((x.to_bits() >> 52) as i32) - 1023
    } else {
        exponent(x * 2f64.powi(64)) - 64
    }
}

/// The f64 model of a norm of f64 values: `(S, e)` with norm `= S · 2^e`, `S` in `[1, sqrt(n)]`
/// (`S = 0` for all zeros). Two passes: the largest magnitude's exponent `e`, then the plain
/// sum of the squares of `v · 2^-e` (exact scalings, as long as the values lie within 2^900 of
/// the largest; the tests keep them so).
fn norm_model_f64(v: &[f64]) -> (f64, i32) {
    let m = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    if m == 0.0 {
        return (0.0, 0);
    }
    let e = exponent(m);
    let s: f64 = v
        .iter()
        .map(|x| {
            let y = scale_pow2(*x, -e);
            y * y
        })
        .sum();
    (s.sqrt(), e)
}

/// `|got - want| <= rel · |want| + abs`, with a message.
fn assert_near(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs() + abs,
        "{what}: got {got:e}, want {want:e} (rel {rel:e}, abs {abs:e})"
    );
}

/// Splits `v` into tensors at `cuts` and clips them as one gradient.
fn clip_split<F: fused_rnn::Float>(v: &mut [F], cuts: &[usize], max: F) -> fused_rnn::Result<F> {
    let mut parts: Vec<&mut [F]> = Vec::new();
    let mut rest = v;
    let mut at = 0;
    for &c in cuts {
        let (a, b) = rest.split_at_mut(c - at);
        parts.push(a);
        rest = b;
        at = c;
    }
    parts.push(rest);
    clip_grad_norm(&mut parts, max)
}

#[test]
fn an_f32_scale_that_underflows_in_f32_is_applied_in_f64() {
    // max/norm = 1e-30 / 1.414e30 = 7.07e-61, far below f32's smallest subnormal; the
    // clipped values, 7.07e-31, are ordinary f32 numbers.
    let mut g = [1e30f32, 1e30];
    let norm = clip_grad_norm(&mut [&mut g[..]], 1e-30).unwrap();
    assert_eq!(norm, (2f64.sqrt() * f64::from(1e30f32)) as f32);
    let want = (f64::from(1e30f32) * (f64::from(1e-30f32) / (2f64.sqrt() * 1e30f32 as f64))) as f32;
    for v in g {
        assert!(ulps32(v, want) <= 1, "clipped to {v:e}, want {want:e}");
    }
}

#[test]
fn f64_norms_whose_squares_overflow_are_clipped_not_refused() {
    let mut g = [1e200f64, -1e200];
    let norm = clip_grad_norm(&mut [&mut g[..]], 1.0).unwrap();
    assert_near("norm", norm, 2f64.sqrt() * 1e200, 3.0 * f64::EPSILON, 0.0);
    assert_near("g[0]", g[0], 0.5f64.sqrt(), 4.0 * f64::EPSILON, 0.0);
    assert_near("g[1]", g[1], -(0.5f64.sqrt()), 4.0 * f64::EPSILON, 0.0);
}

#[test]
fn f64_norms_whose_squares_underflow_are_not_zero() {
    for x in [1e-200f64, 1e-300, 5e-324, f64::MIN_POSITIVE] {
        let mut g = [x, x];
        let norm = clip_grad_norm(&mut [&mut g[..]], 1.0).unwrap();
        // `x·√2` is normal for a normal `x`; for the subnormal 2^-1074 the norm rounds to
        // 2^-1074 itself, as the product does.
        let want = x * core::f64::consts::SQRT_2;
        assert_near(
            &format!("norm of [{x:e}; 2]"),
            norm,
            want,
            3.0 * f64::EPSILON,
            0.0,
        );
        assert_eq!(g, [x, x], "below max_norm nothing changes");
    }
}

#[test]
fn an_f32_norm_past_f32_max_saturates_and_the_gradients_are_still_clipped() {
    // The norm 4.24e38 is finite in f64 but past f32::MAX (3.40e38): the returned norm
    // saturates to f32::MAX, and the gradients are scaled by the exact f64 factor.
    let mut g = [3e38f32, 3e38];
    let norm = clip_grad_norm(&mut [&mut g[..]], 1.0).unwrap();
    assert_eq!(norm, f32::MAX);
    let want = 0.5f64.sqrt() as f32;
    for v in g {
        assert!(ulps32(v, want) <= 1, "clipped to {v:e}, want {want:e}");
    }
    // Likewise f64 past f64::MAX.
    let mut g = [f64::MAX, -f64::MAX];
    let norm = clip_grad_norm(&mut [&mut g[..]], 2.0).unwrap();
    assert_eq!(norm, f64::MAX);
    assert_near("g[0]", g[0], 2f64.sqrt(), 4.0 * f64::EPSILON, 0.0);
    assert_near("g[1]", g[1], -(2f64.sqrt()), 4.0 * f64::EPSILON, 0.0);
}

#[test]
fn empty_gradients_have_norm_positive_zero() {
    let none: &mut [&mut [f32]] = &mut [];
    let n = clip_grad_norm(none, 1.0).unwrap();
    assert_eq!(n.to_bits(), 0.0f32.to_bits(), "norm {n:?}");
    let (mut e1, mut e2): ([f64; 0], [f64; 0]) = ([], []);
    let n = clip_grad_norm(&mut [&mut e1[..], &mut e2[..]], 1.0).unwrap();
    assert_eq!(n.to_bits(), 0.0f64.to_bits(), "norm {n:?}");
    let mut z = [-0.0f64, 0.0, -0.0];
    let n = clip_grad_norm(&mut [&mut z[..]], 1.0).unwrap();
    assert_eq!(n.to_bits(), 0.0f64.to_bits(), "norm {n:?}");
    assert_eq!(z.map(f64::to_bits), [-0.0f64, 0.0, -0.0].map(f64::to_bits));
}

/// `[3·2^k, 4·2^k]` has the norm `5·2^k` exactly, at every exponent where the three are
/// representable; clipped to `2^k` it becomes `[0.6·2^k, 0.8·2^k]` (rounded).
#[test]
fn three_four_five_at_every_exponent() {
    for k in -149..=125 {
        let p = 2f64.powi(k);
        let mut g = [(3.0 * p) as f32, -(4.0 * p) as f32];
        let norm = clip_split(&mut g, &[1], p as f32).unwrap();
        if 5.0 * p <= f64::from(f32::MAX) {
            assert_eq!(f64::from(norm), 5.0 * p, "f32 2^{k}");
        } else {
            assert_eq!(norm, f32::MAX, "f32 2^{k}");
        }
        for (v, want) in g.iter().zip([0.6 * p, -0.8 * p]) {
            assert!(ulps32(*v, want as f32) <= 1, "f32 2^{k}: {v:e} vs {want:e}");
        }
    }
    for k in -1074..=1021 {
        let p = scale_pow2(1.0, k);
        let mut g = [3.0 * p, -4.0 * p];
        let norm = clip_grad_norm(&mut [&mut g[..]], p).unwrap();
        let five = scale_pow2(5.0, k);
        if five.is_finite() {
            assert_eq!(norm, five, "f64 2^{k}");
        } else {
            assert_eq!(norm, f64::MAX, "f64 2^{k}");
        }
        let tiny = f64::from_bits(1);
        assert_near(
            &format!("f64 2^{k} g0"),
            g[0],
            scale_pow2(0.6, k),
            2.0 * f64::EPSILON,
            tiny,
        );
        assert_near(
            &format!("f64 2^{k} g1"),
            g[1],
            scale_pow2(-0.8, k),
            2.0 * f64::EPSILON,
            tiny,
        );
    }
}

/// A random f32 with a random sign, mantissa and exponent in `[lo, hi]` (subnormals below
/// -126).
fn random_f32(r: &mut rand::rngs::StdRng, lo: i32, hi: i32) -> f32 {
    let m = r.random_range(1.0f64..2.0);
    let s = if r.random_range(0..2) == 0 { 1.0 } else { -1.0 };
    (s * m * 2f64.powi(r.random_range(lo..=hi))) as f32
}

#[test]
fn random_f32_gradients_against_the_f64_model() {
    let mut r = rng(41);
    for case in 0..4000 {
        let n = r.random_range(1..=40);
        let lo = r.random_range(-150..=127);
        let hi = r.random_range(lo..=127);
        let g: Vec<f32> = (0..n).map(|_| random_f32(&mut r, lo, hi)).collect();
        let max = random_f32(&mut r, -149, 127).abs();
        let norm64 = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let mut got = g.clone();
        let cuts: Vec<usize> = if n > 2 { vec![1, n / 2] } else { vec![] };
        let norm = clip_split(&mut got, &cuts, max).unwrap();
        let want_norm = if norm64 as f32 == f32::INFINITY {
            f32::MAX
        } else {
            norm64 as f32
        };
        assert!(
            ulps32(norm, want_norm) <= 1,
            "case {case}: norm {norm:e}, want {want_norm:e} ({norm64:e})"
        );
        let factor = f64::from(max) / norm64;
        for (k, (a, b)) in got.iter().zip(&g).enumerate() {
            let want = if norm64 > f64::from(max) {
                (f64::from(*b) * factor) as f32
            } else {
                *b
            };
            assert!(
                ulps32(*a, want) <= 1,
                "case {case} [{k}]: {a:e}, want {want:e} (from {b:e}, max {max:e}, norm {norm64:e})"
            );
        }
    }
}

/// A random f64 as [`random_f32`] (subnormals below -1022).
fn random_f64(r: &mut rand::rngs::StdRng, lo: i32, hi: i32) -> f64 {
    let m = r.random_range(1.0f64..2.0);
    let s = if r.random_range(0..2) == 0 { 1.0 } else { -1.0 };
    scale_pow2(s * m, r.random_range(lo..=hi))
}

#[test]
fn random_f64_gradients_against_the_f64_model() {
    let mut r = rng(42);
    // Cases whose factor `max / norm` is below f64's normal range (applied in two steps).
    let mut tiny_factors = 0;
    for case in 0..4000 {
        let n = r.random_range(1..=40usize);
        // Values within 2^900 of each other (the model's exact range), anywhere in f64's.
        let lo = r.random_range(-1075..=1023);
        let hi = r.random_range(lo..=(lo + 900).min(1023));
        let g: Vec<f64> = (0..n).map(|_| random_f64(&mut r, lo, hi)).collect();
        let max = random_f64(&mut r, -1074, 1023).abs();
        let (s, e) = norm_model_f64(&g);
        let norm_model = scale_pow2(s, e);
        let mut got = g.clone();
        let cuts: Vec<usize> = if n > 2 { vec![1, n / 2] } else { vec![] };
        let norm = clip_split(&mut got, &cuts, max).unwrap();
        let eps = f64::EPSILON;
        let tiny = f64::from_bits(1);
        if norm_model.is_finite() {
            assert_near(
                &format!("case {case} norm"),
                norm,
                norm_model,
                (n as f64 + 2.0) * eps,
                tiny,
            );
        } else {
            assert_eq!(norm, f64::MAX, "case {case}: norm past f64::MAX saturates");
        }
        // Clipping happens when norm > max, i.e. S > max · 2^-e.
        let clips = s > scale_pow2(max, -e);
        if clips && exponent(max) - e < -1022 {
            tiny_factors += 1;
        }
        for (k, (a, b)) in got.iter().zip(&g).enumerate() {
            let want = if clips {
                scale_pow2(*b, -e) / s * max
            } else {
                *b
            };
            assert_near(
                &format!("case {case} [{k}] (from {b:e}, max {max:e}, norm {norm_model:e})"),
                *a,
                want,
                (n as f64 + 4.0) * eps,
                tiny,
            );
        }
    }
    assert!(
        tiny_factors >= 100,
        "{tiny_factors} cases with a subnormal factor"
    );
}

#[test]
fn non_finite_gradients_are_refused_and_left_untouched() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in 0..3 {
            let mut a = [3e38f32, -1.5, 1e-40];
            let mut b = [2.0f32, 1e30];
            a[at] = bad;
            let (a0, b0) = (a.map(f32::to_bits), b.map(f32::to_bits));
            let r = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 1.0);
            assert!(
                matches!(r, Err(Error::InvalidArgument { .. })),
                "{bad} at {at}: {r:?}"
            );
            assert_eq!((a.map(f32::to_bits), b.map(f32::to_bits)), (a0, b0));
        }
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        // Next to values whose squares overflow or underflow.
        for others in [[1e300f64, -1e300], [1e-300, 5e-324], [1.0, 1e200]] {
            let mut a = [others[0], bad, others[1]];
            let a0 = a.map(f64::to_bits);
            let r = clip_grad_norm(&mut [&mut a[..]], 1e-300);
            assert!(
                matches!(r, Err(Error::InvalidArgument { .. })),
                "{bad}: {r:?}"
            );
            assert_eq!(a.map(f64::to_bits), a0);
        }
    }
}

#[test]
fn max_norm_must_be_positive_and_finite() {
    for bad in [
        0.0f64,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        let mut g = [1.0f64, 2.0];
        let r = clip_grad_norm(&mut [&mut g[..]], bad);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
        assert_eq!(g, [1.0, 2.0]);
        let mut g = [1.0f32, 2.0];
        let r = clip_grad_norm(&mut [&mut g[..]], bad as f32);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
    }
    // The smallest positive values are valid.
    let mut g = [1.0f32, 0.0];
    assert_eq!(
        clip_grad_norm(&mut [&mut g[..]], f32::from_bits(1)).unwrap(),
        1.0
    );
    assert_eq!(g, [f32::from_bits(1), 0.0]);
    let mut g = [1.0f64, 0.0];
    assert_eq!(
        clip_grad_norm(&mut [&mut g[..]], f64::from_bits(1)).unwrap(),
        1.0
    );
    assert_eq!(g, [f64::from_bits(1), 0.0]);
}

/// `clip_grad_value` against the model `min(max(v, -c), c)` with NaN passing through.
#[test]
fn clipping_by_value_clamps_each_element_and_lets_nan_through() {
    let model = |v: f64, c: f64| if v.is_nan() { v } else { v.clamp(-c, c) };
    let values = [
        0.0f64,
        -0.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        1e300,
        -1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(1),
    ];
    for c in [0.0f64, 1e-310, 1.0, 3e38, f64::MAX] {
        let mut a = values;
        let mut b = values.map(|v| v as f32);
        let (left, right) = a.split_at_mut(5);
        clip_grad_value(&mut [left, right], c).unwrap();
        let c32 = (c as f32).min(f32::MAX);
        clip_grad_value(&mut [&mut b[..]], c32).unwrap();
        for (k, v) in values.iter().enumerate() {
            let want = model(*v, c);
            assert!(
                a[k] == want || (a[k].is_nan() && want.is_nan()),
                "f64 {v} clipped to {c}: {}",
                a[k]
            );
            let want = model(f64::from(*v as f32), f64::from(c32)) as f32;
            assert!(
                b[k] == want || (b[k].is_nan() && want.is_nan()),
                "f32 {v} clipped to {c}: {}",
                b[k]
            );
        }
    }
    let none: &mut [&mut [f32]] = &mut [];
    clip_grad_value(none, 1.0).unwrap();
    for bad in [-1.0f64, -1e-30, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut a = [5.0f64, -5.0];
        let r = clip_grad_value(&mut [&mut a[..]], bad);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
        assert_eq!(a, [5.0, -5.0], "a refused call changes nothing");
        let mut b = [5.0f32, -5.0];
        let r = clip_grad_value(&mut [&mut b[..]], bad as f32);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad}: {r:?}"
        );
        assert_eq!(b, [5.0, -5.0]);
    }
}
