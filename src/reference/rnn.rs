//! Vanilla RNN: `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`.

use super::{ReferenceGradients, Trace, Upstream, add_matvec, affine_backward, state_grad};
use crate::error::Result;
use crate::float::Float;
use crate::shape::{Dims, RnnActivation};
use crate::weights::LayerWeights;

/// `act(a)`.
fn activate<F: Float>(act: RnnActivation, a: F) -> F {
    match act {
        RnnActivation::Tanh => a.tanh(),
        RnnActivation::Relu => {
            if a > F::ZERO {
                a
            } else {
                F::ZERO
            }
        }
    }
}

/// `act'(a)` from the activated value `h = act(a)`: `1 - h²` for tanh; for relu 1 where `a > 0`,
/// which is exactly where `h > 0`, else 0.
fn derivative<F: Float>(act: RnnActivation, h: F) -> F {
    match act {
        RnnActivation::Tanh => F::ONE - h * h,
        RnnActivation::Relu => {
            if h > F::ZERO {
                F::ONE
            } else {
                F::ZERO
            }
        }
    }
}

pub(super) fn forward<F: Float>(
    act: RnnActivation,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    tr: &mut Trace<F>,
) {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    let h = &mut tr.h;
    let mut a = vec![F::ZERO; hid];
    for t in 0..dims.seq_len {
        for b in 0..dims.batch {
            let x_t = &x[(t * dims.batch + b) * inp..][..inp];
            let h_prev = &h[t * s + b * hid..][..hid];
            for (k, ak) in a.iter_mut().enumerate() {
                *ak = w.bias_ih[k] + w.bias_hh[k];
            }
            add_matvec(&mut a, w.weight_ih, x_t);
            add_matvec(&mut a, w.weight_hh, h_prev);
            let h_next = &mut h[(t + 1) * s + b * hid..][..hid];
            for (hk, &ak) in h_next.iter_mut().zip(&a) {
                *hk = activate(act, ak);
            }
        }
    }
}

pub(super) fn backward<F: Float>(
    act: RnnActivation,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    tr: &Trace<F>,
    up: &Upstream<'_, F>,
    g: &mut ReferenceGradients<F>,
) -> Result<()> {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    // dL/dh_t from the later steps (starts as dh_n for the last step).
    let mut dh_next = up.dh_n()?;
    let mut da = vec![F::ZERO; hid];
    for t in (0..dims.seq_len).rev() {
        let dy = up.dy_step(t)?;
        let mut dh_prev = state_grad(s)?;
        for b in 0..dims.batch {
            let h_t = &tr.h[(t + 1) * s + b * hid..][..hid];
            for k in 0..hid {
                let dh = dy[b * hid + k] + dh_next[b * hid + k];
                da[k] = dh * derivative(act, h_t[k]);
            }
            let row = (t * dims.batch + b) * inp;
            affine_backward(
                w,
                &mut g.weights,
                &da,
                &x[row..row + inp],
                &tr.h[t * s + b * hid..][..hid],
                &mut g.dx[row..row + inp],
                &mut dh_prev[b * hid..(b + 1) * hid],
            );
        }
        dh_next = dh_prev;
    }
    g.dh0 = dh_next;
    Ok(())
}
