//! Gradient clipping by global norm, the usual guard against exploding gradients in
//! recurrent training.

use crate::error::{Error, Result};
use crate::float::Float;

/// Scales every tensor in `grads` by `max_norm / norm` when their joint L2 norm exceeds
/// `max_norm`, and returns the norm before clipping (as PyTorch's `clip_grad_norm_`).
///
/// The norm is accumulated in f64 whatever `F` is. `max_norm` must be positive and finite. If
/// the norm is NaN or infinite the gradients are left untouched and
/// [`Error::InvalidArgument`] is returned: scaling would only spread the NaN.
pub fn clip_grad_norm<F: Float>(grads: &mut [&mut [F]], max_norm: F) -> Result<F> {
    let max = max_norm.to_f64();
    if !(max > 0.0 && max.is_finite()) {
        return Err(Error::InvalidArgument {
            what: "max_norm",
            why: format!("must be positive and finite, got {max}"),
        });
    }
    let sum_sq: f64 = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|v| {
            let v = v.to_f64();
            v * v
        })
        .sum();
    let norm = sum_sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::InvalidArgument {
            what: "grads",
            why: format!("global norm is {norm}; gradients left unscaled"),
        });
    }
    if norm > max {
        let scale = F::from_f64(max / norm);
        for g in grads.iter_mut() {
            for v in g.iter_mut() {
                *v *= scale;
            }
        }
    }
    Ok(F::from_f64(norm))
}
