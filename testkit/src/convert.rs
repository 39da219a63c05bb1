//! Widening to f64 and rounding back to the precision under test.

use fused_rnn::Float;

/// Widens to f64 (exact for f32 and f64).
pub fn widen<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|a| a.to_f64()).collect()
}

/// Rounds to `F` (exact for values drawn on the f32 grid).
pub fn narrow<F: Float>(v: &[f64]) -> Vec<F> {
    v.iter().map(|&a| F::from_f64(a)).collect()
}
