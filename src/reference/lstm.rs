//! LSTM: gates `i, f, g, o = σ, σ, tanh, σ` of `W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`,
//! `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)`.

use super::{ReferenceGradients, Trace, Upstream, add_matvec, affine_backward, state_grad};
use crate::error::Result;
use crate::float::Float;
use crate::shape::Dims;
use crate::weights::LayerWeights;

pub(super) fn forward<F: Float>(dims: &Dims, w: &LayerWeights<'_, F>, x: &[F], tr: &mut Trace<F>) {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    let gh = 4 * hid;
    let Trace {
        h,
        c: Some(c),
        gates,
        ..
    } = tr
    else {
        unreachable!("an LSTM trace has cell states");
    };
    for t in 0..dims.seq_len {
        for b in 0..dims.batch {
            let x_t = &x[(t * dims.batch + b) * inp..][..inp];
            let a = &mut gates[(t * dims.batch + b) * gh..][..gh];
            for (k, ak) in a.iter_mut().enumerate() {
                *ak = w.bias_ih[k] + w.bias_hh[k];
            }
            add_matvec(a, w.weight_ih, x_t);
            add_matvec(a, w.weight_hh, &h[t * s + b * hid..][..hid]);
            for k in 0..hid {
                let i = a[k].sigmoid();
                let f = a[hid + k].sigmoid();
                let gg = a[2 * hid + k].tanh();
                let o = a[3 * hid + k].sigmoid();
                a[k] = i;
                a[hid + k] = f;
                a[2 * hid + k] = gg;
                a[3 * hid + k] = o;
                let c_prev = c[t * s + b * hid + k];
                let c_t = f * c_prev + i * gg;
                c[(t + 1) * s + b * hid + k] = c_t;
                h[(t + 1) * s + b * hid + k] = o * c_t.tanh();
            }
        }
    }
}

pub(super) fn backward<F: Float>(
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    tr: &Trace<F>,
    up: &Upstream<'_, F>,
    g: &mut ReferenceGradients<F>,
) -> Result<()> {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    let gh = 4 * hid;
    let c =
        tr.c.as_ref()
            .expect("the LSTM forward pass always records the cell states");
    // dL/dh_t and dL/dc_t from the later steps.
    let mut dh_next = up.dh_n()?;
    let mut dc_next = up.dc_n()?;
    let mut da = vec![F::ZERO; gh];
    for t in (0..dims.seq_len).rev() {
        let dy = up.dy_step(t)?;
        let mut dh_prev = state_grad(s)?;
        let mut dc_prev = state_grad(s)?;
        for b in 0..dims.batch {
            let act = &tr.gates[(t * dims.batch + b) * gh..][..gh];
            for k in 0..hid {
                let j = b * hid + k;
                let (i, f, gg, o) = (act[k], act[hid + k], act[2 * hid + k], act[3 * hid + k]);
                let tc = c[(t + 1) * s + j].tanh();
                let dh = dy[j] + dh_next[j];
                let dc = dc_next[j] + dh * o * (F::ONE - tc * tc);
                da[k] = dc * gg * i * (F::ONE - i);
                da[hid + k] = dc * c[t * s + j] * f * (F::ONE - f);
                da[2 * hid + k] = dc * i * (F::ONE - gg * gg);
                da[3 * hid + k] = dh * tc * o * (F::ONE - o);
                dc_prev[j] = dc * f;
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
        dc_next = dc_prev;
    }
    g.dh0 = dh_next;
    g.dc0 = Some(dc_next);
    Ok(())
}
