//! f64 references of the activations and the ULP measure their f32 kernels are graded by
//! (`tests/activation_accuracy.rs`, `fuzz/fuzz_targets/activations.rs`).

/// The documented bound of `fused_rnn::activation` over [-30, 30], in ULP of the f32 result.
pub const MAX_ULP: f64 = 4.0;

/// f64 reference of the sigmoid: exp of -|x| (full relative accuracy for negative x),
/// reflected by sign.
pub fn sigmoid_ref(x: f32) -> f64 {
    let x = f64::from(x);
    let e = (-x.abs()).exp();
    let s = e / (1.0 + e);
    if x > 0.0 { 1.0 - s } else { s }
}

/// f64 reference of tanh.
pub fn tanh_ref(x: f32) -> f64 {
    f64::from(x).tanh()
}

/// The spacing of f32 numbers at `|r|` (`r` a normal f32 magnitude or larger).
///
/// # Panics
/// If `|r|` is below the smallest normal f32.
pub fn ulp_at(r: f64) -> f64 {
    let r = r.abs();
    assert!(r >= f64::from(f32::MIN_POSITIVE));
    let exp = ((r.to_bits() >> 52) & 0x7ff) as i32 - 1023; // floor(log2 r)
    2f64.powi(exp - 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_at_is_the_f32_spacing() {
        for r in [1.0f32, 1.5, 0.25, 3.0e-30, 1.0e30, f32::MIN_POSITIVE] {
            let next = f32::from_bits(r.to_bits() + 1);
            assert_eq!(
                ulp_at(f64::from(r)),
                f64::from(next) - f64::from(r),
                "{r:e}"
            );
        }
    }

    #[test]
    fn references_are_odd_or_reflected() {
        for x in [0.0f32, 0.5, 3.0, 17.0, 40.0] {
            assert!(
                (sigmoid_ref(x) + sigmoid_ref(-x) - 1.0).abs() <= f64::EPSILON,
                "{x}"
            );
            assert_eq!(tanh_ref(-x), -tanh_ref(x), "{x}");
        }
    }
}
