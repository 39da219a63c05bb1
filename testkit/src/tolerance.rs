//! How close a result must be to the f64 oracle, stated once (rule of thumb 9), and the
//! comparison that reports where and by how much it is not.
//!
//! An element passes when `|got - want| <= rel · max(|want|, floor)`: `rel` comes from the
//! precision ([`F64_REL`], [`f32_tolerance`]), `floor` is an absolute scale, usually the RMS
//! of the tensor ([`rms`]) or of its family of tensors ([`family_rms`]), because an element's
//! rounding error is relative to the size of the terms it sums, not to the element itself
//! (which can cancel to near zero).

use fused_rnn::{Dims, Float};

/// Relative tolerance of the f64 fused path against the f64 oracle (with an RMS floor): both
/// compute in f64 and differ only in summation order. (The integration tests' fixed cases hold
/// their f64 comparisons to 1e-12; the fuzz targets' structured inputs cancel more.)
pub const F64_REL: f64 = 1e-10;

/// Relative tolerance of an f32 computation (reference or fused) against the f64 reference on
/// the same inputs.
///
/// Every value is built from dot products of length `K = I + H` (forward) and, in backward,
/// sums over up to `T·B` steps and rows, chained through `T` steps. With sequential summation
/// the rounding error of an `n`-term sum is bounded by `n·eps·sum|terms|` in the worst case and
/// behaves like `sqrt(n)·eps·sum|terms|` for independent roundings (Higham & Mary 2019), and the
/// errors of the `T` steps add up. We use the statistical form with everything chained, plus a
/// length-independent term for the few rounded operations every element goes through whatever
/// the length (activation, the derivative `1 - y²` or `σ(1 - σ)` from the activated value,
/// which loses relative accuracy near saturation, products with the upstream gradient):
/// `tol = C · eps_f32 · (4 + sqrt(K · T · B))`, `C = 8`, with `abs_floor` = the RMS of the
/// tensor, since the error of an element is relative to the size of the terms it sums, not to
/// the element itself (which can cancel to near zero).
pub fn f32_tolerance(d: &Dims) -> f64 {
    const C: f64 = 8.0;
    let n = ((d.input + d.hidden) * d.seq_len * d.batch) as f64;
    C * f64::from(f32::EPSILON) * (4.0 + n.sqrt())
}

/// The relative tolerance of precision `F` against the f64 oracle: [`F64_REL`] for f64,
/// [`f32_tolerance`] for f32.
pub fn tolerance<F: Float>(d: &Dims) -> f64 {
    if F::NAME == "f64" {
        F64_REL
    } else {
        f32_tolerance(d)
    }
}

/// Root mean square, 0 for an empty slice.
///
/// 0, not the 0/0 = NaN of the plain formula: an empty tensor has no scale, and a NaN floor
/// would make any bound computed from it NaN, which every `<=` and `>` then treats as a pass.
pub fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64).sqrt()
}

/// The RMS over several tensors together (a family: states `y, h_n, c_n`; input gradients
/// `dx, dh0, dc0`; weight gradients), the floor where one tensor's own RMS is no scale: a
/// one-element tensor's RMS is the element itself, which cancellation can make arbitrarily
/// small while its rounding error stays eps times its terms.
pub fn family_rms(tensors: &[&[f64]]) -> f64 {
    let all: Vec<f64> = tensors.iter().flat_map(|t| t.iter().copied()).collect();
    rms(&all)
}

/// `|got - want| / (rel · max(|want|, floor))`, the error of one element in units of its
/// bound (above 1 fails): 0 where both are NaN or both are equal (equal infinities included),
/// infinite where exactly one is NaN or `want` is infinite and `got` is not the same infinity,
/// so never NaN.
pub fn error_ratio(got: f64, want: f64, rel: f64, floor: f64) -> f64 {
    if (got.is_nan() && want.is_nan()) || got == want {
        return 0.0;
    }
    if got.is_nan() || want.is_nan() {
        return f64::INFINITY;
    }
    // With an infinite `want` and any other `got` the error and the bound are both infinite:
    // inf / inf is NaN, which `ratio > 1` would pass.
    let ratio = (got - want).abs() / (rel * want.abs().max(floor));
    if ratio.is_nan() { f64::INFINITY } else { ratio }
}

/// The worst element of `got` against `want` under [`error_ratio`]: `(index, got, want,
/// ratio)`, ratio 0 if every element is equal; a ratio above 1 fails.
///
/// # Panics
/// On a length mismatch.
#[track_caller]
pub fn worst_ratio<F: Float>(
    got: &[F],
    want: &[F],
    rel: f64,
    floor: f64,
) -> (usize, f64, f64, f64) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut worst = (0, 0.0, 0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        let ratio = error_ratio(g, w, rel, floor);
        if ratio > worst.3 {
            worst = (i, g, w, ratio);
        }
    }
    worst
}

/// Panics unless `|got[i] - want[i]| <= rel * max(|want[i]|, abs_floor)` for every `i`
/// ([`error_ratio`] at most 1).
///
/// Also fails on a length mismatch and where exactly one of `got[i]`, `want[i]` is NaN (both
/// NaN passes; equal infinities pass). The message names `what`, how many elements fail, the
/// first failing index with both values, and the worst element.
#[track_caller]
pub fn assert_close<F: Float>(what: &str, got: &[F], want: &[F], rel: f64, abs_floor: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length mismatch: got {}, want {}",
        got.len(),
        want.len()
    );
    let ratios: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| error_ratio(g.to_f64(), w.to_f64(), rel, abs_floor))
        .collect();
    let fails = ratios.iter().filter(|&&r| r > 1.0).count();
    if fails == 0 {
        return;
    }
    let first = ratios
        .iter()
        .position(|&r| r > 1.0)
        .expect("a failing element");
    let (g, w) = (got[first].to_f64(), want[first].to_f64());
    let (wi, wg, ww, wr) = worst_ratio(got, want, rel, abs_floor);
    panic!(
        "{what}: {fails} of {} elements differ (rel {rel:e}, abs floor {abs_floor:e}); \
         first at [{first}]: got {g:e}, want {w:e} (err {:e}, {:.3}x the bound); \
         worst at [{wi}]: got {wg:e}, want {ww:e} (err {:e}, {wr:.3}x the bound)",
        got.len(),
        (g - w).abs(),
        ratios[first],
        (wg - ww).abs(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_of_nothing_is_zero() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(rms(&[3.0, -4.0]), (12.5f64).sqrt());
        assert_eq!(family_rms(&[&[], &[2.0], &[-2.0]]), 2.0);
    }

    #[test]
    fn error_ratio_is_never_nan() {
        let inf = f64::INFINITY;
        assert_eq!(error_ratio(f64::NAN, f64::NAN, 1e-6, 1.0), 0.0);
        assert_eq!(error_ratio(inf, inf, 1e-6, 1.0), 0.0);
        assert_eq!(error_ratio(-inf, inf, 1e-6, 1.0), inf);
        assert_eq!(error_ratio(1.0, inf, 1e-6, 1.0), inf);
        assert_eq!(error_ratio(inf, 1.0, 1e-6, 1.0), inf);
        assert_eq!(error_ratio(f64::NAN, 1.0, 1e-6, 1.0), inf);
        assert_eq!(error_ratio(1.0, f64::NAN, 1e-6, 1.0), inf);
        // The floor scales where |want| is below it.
        assert!((error_ratio(1e-3, 0.0, 1e-2, 0.5) - 0.2).abs() < 1e-12);
        assert!((error_ratio(3.0, 2.0, 1e-1, 0.5) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn worst_ratio_names_the_worst_element() {
        let (i, g, w, r) = worst_ratio(&[1.0f32, 2.5, 3.0], &[1.0, 2.0, 3.1], 0.1, 0.0);
        assert_eq!((i, g, w), (1, 2.5, 2.0));
        assert!((r - 2.5).abs() < 1e-12);
        assert_eq!(worst_ratio::<f64>(&[], &[], 0.1, 0.0).3, 0.0);
    }

    #[test]
    fn assert_close_passes_within_the_bound() {
        assert_close(
            "ok",
            &[1.0, 0.0, f64::NAN],
            &[1.05, 0.01, f64::NAN],
            0.1,
            0.1,
        );
    }

    #[test]
    #[should_panic(expected = "1 of 2 elements differ")]
    fn assert_close_fails_past_the_bound() {
        assert_close("past", &[1.0, 1.2], &[1.0, 1.0], 0.1, 0.0);
    }

    #[test]
    #[should_panic(expected = "1 of 1 elements differ")]
    fn assert_close_fails_on_one_nan() {
        assert_close("nan", &[f32::NAN], &[0.0], 0.1, 1.0);
    }

    #[test]
    #[should_panic(expected = "1 of 1 elements differ")]
    fn assert_close_fails_on_another_infinity() {
        assert_close("inf", &[-f64::INFINITY], &[f64::INFINITY], 0.1, 1.0);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn assert_close_fails_on_lengths() {
        assert_close("len", &[0.0], &[0.0, 0.0], 0.1, 1.0);
    }

    #[test]
    fn tolerance_picks_the_precision() {
        let d = Dims {
            seq_len: 3,
            batch: 2,
            input: 4,
            hidden: 5,
        };
        assert_eq!(tolerance::<f64>(&d), F64_REL);
        assert_eq!(tolerance::<f32>(&d), f32_tolerance(&d));
    }
}
