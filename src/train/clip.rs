//! Gradient clipping, the usual guard against exploding gradients in recurrent training: by
//! global norm ([`clip_grad_norm`]) and by value ([`clip_grad_value`]).

use crate::error::{Error, Result};
use crate::float::Float;

/// Scales every tensor in `grads` by `max_norm / norm` when their joint L2 norm exceeds
/// `max_norm`, and returns the norm before clipping (as PyTorch's `clip_grad_norm_`).
///
/// # Range and precision
///
/// The norm is computed in f64 whatever `F` is, scaled as LAPACK's `dnrm2` scales it (Blue's
/// algorithm, LAPACK 3.10): values whose squares would overflow or underflow f64 are summed
/// scaled by a power of two, so any finite gradients have a norm, from `[1e-300, 1e-300]`
/// (1.41e-300, not 0) to `[1e200, 1e200]` (1.41e200, not infinity), to within `(n + 2)·ε`
/// (f64 ε) for `n` elements. The factor `max_norm / norm` is formed in f64 and applied to each
/// element in f64, rounded once to `F`: f32 gradients `[1e30, 1e30]` clipped to `1e-30` become
/// 7.07e-31 each (an f32 factor, 7e-61, would round to 0). Where the factor is below f64's
/// normal range (f64 gradients only, e.g. `[1e200, 1e200]` clipped to `1e-200`), it is applied
/// as a mantissa and a power of two, still rounding each element once.
///
/// # The norm returned
///
/// The norm rounded to `F`, always finite: a norm past `F`'s largest finite value (f32
/// `[3e38, 3e38]`, norm 4.24e38; f64 `[f64::MAX, f64::MAX]`) returns `F::MAX`, a lower bound,
/// and the gradients are clipped with the exact f64 factor all the same. Empty `grads` (or
/// only empty tensors) have the norm `+0.0` and nothing changes.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `max_norm` is not positive and finite, or if any element is
/// NaN or ±inf (the norm would be NaN or infinite); the gradients are then left untouched:
/// scaling would only spread the NaN.
pub fn clip_grad_norm<F: Float>(grads: &mut [&mut [F]], max_norm: F) -> Result<F> {
    let max = max_norm.to_f64();
    if !(max > 0.0 && max.is_finite()) {
        return Err(Error::InvalidArgument {
            what: "max_norm",
            why: format!("must be positive and finite, got {max}"),
        });
    }
    let Some(norm) = ScaledNorm::of(grads) else {
        return Err(Error::InvalidArgument {
            what: "grads",
            why: "an element is NaN or infinite; gradients left unscaled".into(),
        });
    };
    // Infinite for an f64 norm past f64::MAX, rounded for a subnormal one.
    let norm_f64 = norm.root * pow2(norm.exp);
    if norm_f64 > max {
        norm.apply_factor(grads, max);
    }
    let norm_f = F::from_f64(norm_f64);
    Ok(if norm_f.is_finite() { norm_f } else { F::MAX })
}

/// Clamps every element of `grads` to `[-clip_value, clip_value]` (as PyTorch's
/// `clip_grad_value_`). NaN stays NaN (it is not clamped, so it still shows); ±inf becomes
/// `±clip_value`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `clip_value` is negative, NaN or infinite; the gradients are
/// then left untouched. Zero is valid (every element but NaN becomes ±0).
pub fn clip_grad_value<F: Float>(grads: &mut [&mut [F]], clip_value: F) -> Result<()> {
    if !(clip_value >= F::ZERO && clip_value.is_finite()) {
        return Err(Error::InvalidArgument {
            what: "clip_value",
            why: format!("must be finite and at least 0, got {}", clip_value.to_f64()),
        });
    }
    for v in grads.iter_mut().flat_map(|g| g.iter_mut()) {
        // Comparisons with NaN are false: it passes through.
        if *v > clip_value {
            *v = clip_value;
        } else if *v < -clip_value {
            *v = -clip_value;
        }
    }
    Ok(())
}

/// `2^k` for `-1022 <= k <= 1023` (a normal f64, built from its bits).
const fn pow2(k: i32) -> f64 {
    f64::from_bits(((1023 + k) as u64) << 52)
}

/// Blue's thresholds and scales for f64 (LAPACK 3.10's `la_constants`; Anderson, "Algorithm
/// 978: Safe Scaling in the Level 1 BLAS", 2017). Squares of `|x|` in `[TSML, TBIG]` lie in
/// `[2^-1022, 2^972]`: normal, and summable `2^51` times without overflow. Larger values are
/// summed as `(x·SBIG)²` (at most `2^972` as well), smaller ones as `(x·SSML)²`, which is
/// exact even for subnormal `x` (`x = m·2^-1074` with `m < 2^26` squares to `m²·2^-1074`).
const TSML: f64 = pow2(-511);
const TBIG: f64 = pow2(486);
const SSML: f64 = pow2(537);
const SBIG: f64 = pow2(-538);

/// A 2-norm as `root · 2^exp` (`exp` is 538, 0 or -537): `root` is a normal number or 0, and
/// the product may be past f64's range where the norm is.
#[derive(Debug, Clone, Copy)]
struct ScaledNorm {
    root: f64,
    exp: i32,
}

impl ScaledNorm {
    /// The joint norm of every element (LAPACK's `dnrm2`, accumulated in f64), or `None` if an
    /// element is NaN or ±inf.
    fn of<F: Float>(grads: &[&mut [F]]) -> Option<Self> {
        let (mut small, mut medium, mut big) = (0.0f64, 0.0f64, 0.0f64);
        for v in grads.iter().flat_map(|g| g.iter()) {
            let a = v.to_f64().abs();
            if a > TBIG {
                big += (a * SBIG) * (a * SBIG);
            } else if a < TSML {
                // Summed even after a big value was seen (a branch less); the sum is then
                // dropped below, its squares being more than 2^1994 times smaller.
                small += (a * SSML) * (a * SSML);
            } else {
                // NaN lands here (every comparison false).
                medium += a * a;
            }
        }
        // Finite data cannot overflow the sums (see the constants), so a non-finite sum means
        // a NaN or an infinity (which lands in `big`).
        if !(medium.is_finite() && big.is_finite()) {
            return None;
        }
        let (sum, exp) = if big > 0.0 {
            // The medium values, on big's scale (what underflows there is negligible).
            (big + (medium * SBIG) * SBIG, 538)
        } else if small > 0.0 {
            if medium > 0.0 {
                // Both on the unit scale: `medium >= TSML²`, so `ymax² >= 2^-1022` is normal.
                let (ym, ys) = (medium.sqrt(), small.sqrt() / SSML);
                let (ymin, ymax) = if ys > ym { (ym, ys) } else { (ys, ym) };
                let r = ymin / ymax;
                (ymax * ymax * (1.0 + r * r), 0)
            } else {
                (small, -537)
            }
        } else {
            (medium, 0)
        };
        Some(ScaledNorm {
            root: sum.sqrt(),
            exp,
        })
    }

    /// Multiplies every element by `max / norm` (clipping: `norm > max`, so the factor is
    /// below 1), in f64, rounding once to `F`.
    fn apply_factor<F: Float>(self, grads: &mut [&mut [F]], max: f64) {
        let ScaledNorm { root, exp } = self;
        // `max / (root · 2^exp)` without forming the norm, which may overflow. For `exp > 0`
        // `max / root < 2^exp` is finite; for `exp < 0` `max · 2^-exp < root` is exact.
        let factor = if exp > 0 {
            (max / root) * pow2(-exp)
        } else {
            (max * pow2(-exp)) / root
        };
        let elements = grads.iter_mut().flat_map(|g| g.iter_mut());
        if factor >= f64::MIN_POSITIVE {
            // A normal factor (always so for f32 gradients: at least about 2^-277 / sqrt(n)):
            // one rounding in the product, one to `F`.
            for v in elements {
                *v = F::from_f64(v.to_f64() * factor);
            }
            return;
        }
        // The factor is below f64's normal range (f64 gradients only). Keep it as
        // `f0 · 2^k0` with `f0 = mantissa(max) / root` normal, in `(2^-491, 2^538]`.
        let (m_max, e_max) = frexp(max);
        let f0 = m_max / root;
        let k0 = e_max - exp;
        for v in elements {
            // `|v| <= norm`, so `|v · f0| <= 2^(exp + 1)`: no overflow. If it is below the
            // normal range, then `v · factor < 2^-1022 · 2^k0` with `k0 < -531`: zero.
            let p = v.to_f64() * f0;
            let r = if p.abs() >= f64::MIN_POSITIVE {
                times_pow2(p, k0)
            } else {
                p * 0.0
            };
            *v = F::from_f64(r);
        }
    }
}

/// `(m, e)` with `x = m · 2^e`, `1 <= |m| < 2`, for a finite nonzero `x` (subnormals too).
fn frexp(x: f64) -> (f64, i32) {
    if x.abs() < f64::MIN_POSITIVE {
        let (m, e) = frexp(x * pow2(64));
        return (m, e - 64);
    }
    let e = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    (x * pow2(-e), e)
}

/// `x · 2^k` rounded once, for a normal `x`, when the result is not past f64's range.
fn times_pow2(x: f64, k: i32) -> f64 {
    let (m, e) = frexp(x);
    let t = e + k;
    if t >= -1022 {
        m * pow2(t)
    } else if t >= -1076 {
        // `m · 2^(t + 1074)` is exact and normal; the product with 2^-1074 rounds once.
        (m * pow2(t + 1074)) * f64::from_bits(1)
    } else {
        // Below half the smallest subnormal.
        m * 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::{frexp, pow2, times_pow2};

    #[test]
    fn frexp_and_times_pow2_are_exact() {
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(-1022), f64::MIN_POSITIVE);
        assert_eq!(pow2(1023), 2f64.powi(1023));
        assert_eq!(frexp(f64::from_bits(1)), (1.0, -1074));
        assert_eq!(frexp(-3.0), (-1.5, 1));
        assert_eq!(frexp(f64::MAX).1, 1023);
        // 1.5 · 2^-1075 is 0.75 of the smallest subnormal: rounds up to it.
        assert_eq!(times_pow2(1.5, -1075), f64::from_bits(1));
        // 2^-1075 exactly is a tie: rounds to even, 0.
        assert_eq!(times_pow2(1.0, -1075), 0.0);
        assert_eq!(times_pow2(-1.0, -1077), -0.0);
        assert!(times_pow2(-1.0, -1077).is_sign_negative());
        assert_eq!(times_pow2(1.75, -1073), f64::from_bits(4));
        assert_eq!(times_pow2(3.0, 1000), 3.0 * 2f64.powi(1000));
        assert_eq!(times_pow2(2f64.powi(500), -1500), 2f64.powi(-1000));
    }
}
