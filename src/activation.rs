//! Vectorized f32 sigmoid and tanh over slices, on the instruction-set path you choose.
//!
//! # Accuracy
//!
//! Over every f32 in [-30, 30], the result is within **4 ULP** of the correctly rounded value,
//! on every [`Isa`] path (checked against an f64 reference by `tests/activation_accuracy.rs`;
//! the ULP is the spacing of f32 at the reference value). The paths share algorithm and
//! coefficients but may differ in the last bits: the portable path's multiply-add is not fused.
//! An element's result never depends on its position in the slice or on the slice's length.
//!
//! # Algorithms
//!
//! - `sigmoid(x)`: `e = exp(-|x|)` (range reduction `m = round(8 z log2 e)`, two-constant
//!   Cody–Waite `r = z - m ln2/8`, a degree-3 polynomial for `e^r - 1` on `|r| <= ln2/16`,
//!   and `2^(m/8)` built from the exponent bits and an 8-entry table of `2^(k/8)` rounded to
//!   f32, fused into `e` and `1 + e` with one rounding each), then one true division:
//!   `e / (1 + e)` for `x <= 0` and `1 / (1 + e)` (that is `1 - e / (1 + e)`, with one
//!   rounding fewer) for `x > 0`.
//! - `tanh(x)`: one formula for every `|x|`, with the sign restored at the end:
//!   `tanh(a) = (1 - e^(-2a)) / (1 + e^(-2a))`, where numerator and denominator are built from
//!   `2^n` and `e^(2h) - 1` (`n = round(-2a log2 e)`, `h = -a - n ln2/2`, a degree-6 polynomial
//!   with relative accuracy near `h = 0`), so there is no cancellation for small `|x|` (this is
//!   `-expm1(-2a) / (2 + expm1(-2a))`). `|x|` is clamped to `[2^-12, 9.010914]` first, and the
//!   result is `min(that, |x|)` (never less accurate, as `tanh(a) <= a`), which below `2^-12`
//!   is `x` itself. No data-dependent branches, one division.
//!
//! The coefficients come from `tools/fit_activations.py`.
//!
//! # Special values
//!
//! | input | sigmoid | tanh |
//! |---|---|---|
//! | ±0 | 0.5 | ±0 (sign kept) |
//! | +inf | 1 | 1 |
//! | -inf | 0 | -1 |
//! | NaN | NaN | NaN |
//! | `x < -87.33654` (where `e^x` is subnormal) | exactly 0 | |
//! | `abs(x) >= 9.010914` (where the f32 result rounds to ±1) | | exactly ±1 |
//!
//! No output is subnormal, and normal inputs produce no subnormal intermediate values, so no
//! input triggers the slow denormal paths of the CPU.
//!
//! f64 computations elsewhere in the crate do not use these kernels: they use std's `exp` and
//! `tanh`.

use crate::error::{Result, check_len};
use crate::kernels;
use crate::kernels::isa::Isa;

/// Writes the logistic function `1 / (1 + e^-x)` of each element of `input` to `output`.
///
/// # Errors
///
/// [`Error::BufferLength`](crate::Error::BufferLength) if the slices' lengths differ;
/// [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if this CPU cannot run `isa`.
pub fn sigmoid(isa: Isa, input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output, input.len())?;
    kernels::activation::sigmoid(isa.checked()?.resolve(), input, output);
    Ok(())
}

/// Writes the hyperbolic tangent of each element of `input` to `output`.
///
/// # Errors
///
/// [`Error::BufferLength`](crate::Error::BufferLength) if the slices' lengths differ;
/// [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if this CPU cannot run `isa`.
pub fn tanh(isa: Isa, input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output, input.len())?;
    kernels::activation::tanh(isa.checked()?.resolve(), input, output);
    Ok(())
}

/// Replaces each element of `data` with its logistic function, as [`sigmoid`] would.
///
/// # Errors
///
/// [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if this CPU cannot run `isa`.
pub fn sigmoid_in_place(isa: Isa, data: &mut [f32]) -> Result<()> {
    kernels::activation::sigmoid_in_place(isa.checked()?.resolve(), data);
    Ok(())
}

/// Replaces each element of `data` with its hyperbolic tangent, as [`tanh`] would.
///
/// # Errors
///
/// [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if this CPU cannot run `isa`.
pub fn tanh_in_place(isa: Isa, data: &mut [f32]) -> Result<()> {
    kernels::activation::tanh_in_place(isa.checked()?.resolve(), data);
    Ok(())
}
