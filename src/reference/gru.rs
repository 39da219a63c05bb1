//! GRU, both variants. Gates `r, z` are `σ(W_i* x_t + b_i* + W_h* h + b_h*)` in both;
//! reset-after: `n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn))`, `h_t = (1 - z) * n + z * h`;
//! reset-before: `n = tanh(W_in x_t + b_in + W_hn (r * h) + b_hn)`, `h_t = (1 - z) * h + z * n`.

use super::{
    ReferenceGradients, Trace, Upstream, add_assign, add_matvec, add_matvec_t, add_outer,
    state_grad,
};
use crate::error::Result;
use crate::float::Float;
use crate::shape::{Dims, GruVariant};
use crate::weights::LayerWeights;

pub(super) fn forward<F: Float>(
    variant: GruVariant,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    tr: &mut Trace<F>,
) {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    let gh = 3 * hid;
    // Row blocks of the recurrent weights: `r` and `z` together, and `n`.
    let (w_hrz, w_hn) = w.weight_hh.split_at(2 * hid * hid);
    // `hn` is `[T, B, H]` for reset-after, empty for reset-before.
    let Trace {
        h,
        gates,
        hn: hn_all,
        ..
    } = tr;
    let mut ah_rz = vec![F::ZERO; 2 * hid];
    let mut ah_n = vec![F::ZERO; hid];
    let mut rh = vec![F::ZERO; hid];
    for t in 0..dims.seq_len {
        for b in 0..dims.batch {
            let x_t = &x[(t * dims.batch + b) * inp..][..inp];
            let h_prev = &h[t * s + b * hid..][..hid];
            // Input side `W_ih x_t + b_ih`, all three blocks; the activated gates replace it.
            let a = &mut gates[(t * dims.batch + b) * gh..][..gh];
            a.copy_from_slice(w.bias_ih);
            add_matvec(a, w.weight_ih, x_t);
            // Recurrent side of r and z: `W_h{r,z} h + b_h{r,z}`.
            ah_rz.copy_from_slice(&w.bias_hh[..2 * hid]);
            add_matvec(&mut ah_rz, w_hrz, h_prev);
            for k in 0..2 * hid {
                a[k] = (a[k] + ah_rz[k]).sigmoid();
            }
            ah_n.copy_from_slice(&w.bias_hh[2 * hid..]);
            match variant {
                GruVariant::ResetAfter => {
                    add_matvec(&mut ah_n, w_hn, h_prev);
                    for k in 0..hid {
                        a[2 * hid + k] = (a[2 * hid + k] + a[k] * ah_n[k]).tanh();
                    }
                    hn_all[t * s + b * hid..][..hid].copy_from_slice(&ah_n);
                }
                GruVariant::ResetBefore => {
                    for k in 0..hid {
                        rh[k] = a[k] * h_prev[k];
                    }
                    add_matvec(&mut ah_n, w_hn, &rh);
                    for k in 0..hid {
                        a[2 * hid + k] = (a[2 * hid + k] + ah_n[k]).tanh();
                    }
                }
            }
            for k in 0..hid {
                let (z, n, hp) = (a[hid + k], a[2 * hid + k], h[t * s + b * hid + k]);
                h[(t + 1) * s + b * hid + k] = match variant {
                    GruVariant::ResetAfter => (F::ONE - z) * n + z * hp,
                    GruVariant::ResetBefore => (F::ONE - z) * hp + z * n,
                };
            }
        }
    }
}

pub(super) fn backward<F: Float>(
    variant: GruVariant,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    tr: &Trace<F>,
    up: &Upstream<'_, F>,
    g: &mut ReferenceGradients<F>,
) -> Result<()> {
    let (hid, inp, s) = (dims.hidden, dims.input, dims.state_len());
    let gh = 3 * hid;
    let (w_hrz, w_hn) = w.weight_hh.split_at(2 * hid * hid);
    // dL/dh_t from the later steps.
    let mut dh_next = up.dh_n()?;
    // dL/d(input-side pre-activation) of r, z, n: `W_ih x_t + b_ih` enters each gate's argument
    // with coefficient 1.
    let mut dai = vec![F::ZERO; gh];
    // dL/d(recurrent-side term): `W_hh h + b_hh` per block for reset-after (the n block is scaled
    // by r); for reset-before the n block's recurrent term is `W_hn (r*h) + b_hn`, coefficient 1.
    let mut dah = vec![F::ZERO; gh];
    let mut rh = vec![F::ZERO; hid];
    let mut drh = vec![F::ZERO; hid];
    for t in (0..dims.seq_len).rev() {
        let dy = up.dy_step(t)?;
        let mut dh_prev = state_grad(s)?;
        for b in 0..dims.batch {
            let act = &tr.gates[(t * dims.batch + b) * gh..][..gh];
            let h_prev = &tr.h[t * s + b * hid..][..hid];
            let dhp = &mut dh_prev[b * hid..(b + 1) * hid];
            match variant {
                GruVariant::ResetAfter => {
                    let hn = &tr.hn[t * s + b * hid..][..hid];
                    for k in 0..hid {
                        let (r, z, n) = (act[k], act[hid + k], act[2 * hid + k]);
                        let dh = dy[b * hid + k] + dh_next[b * hid + k];
                        // h_t = (1 - z) n + z h_prev
                        let dz = dh * (h_prev[k] - n);
                        let dn = dh * (F::ONE - z);
                        dhp[k] += dh * z;
                        // n = tanh(ai_n + r * hn)
                        let da_n = dn * (F::ONE - n * n);
                        let dr = da_n * hn[k];
                        let da_r = dr * r * (F::ONE - r);
                        let da_z = dz * z * (F::ONE - z);
                        dai[k] = da_r;
                        dai[hid + k] = da_z;
                        dai[2 * hid + k] = da_n;
                        dah[k] = da_r;
                        dah[hid + k] = da_z;
                        dah[2 * hid + k] = da_n * r;
                    }
                    // Recurrent side: every block sees h_prev.
                    add_outer(&mut g.weights.weight_hh, &dah, h_prev);
                    add_matvec_t(dhp, w.weight_hh, &dah);
                }
                GruVariant::ResetBefore => {
                    for k in 0..hid {
                        let (r, z, n) = (act[k], act[hid + k], act[2 * hid + k]);
                        let dh = dy[b * hid + k] + dh_next[b * hid + k];
                        // h_t = (1 - z) h_prev + z n
                        let dz = dh * (n - h_prev[k]);
                        let dn = dh * z;
                        dhp[k] += dh * (F::ONE - z);
                        dai[hid + k] = dz * z * (F::ONE - z);
                        dai[2 * hid + k] = dn * (F::ONE - n * n);
                        rh[k] = r * h_prev[k];
                    }
                    // n = tanh(ai_n + W_hn (r * h_prev) + b_hn)
                    let da_n = &dai[2 * hid..];
                    drh.fill(F::ZERO);
                    add_matvec_t(&mut drh, w_hn, da_n);
                    for k in 0..hid {
                        let r = act[k];
                        dhp[k] += drh[k] * r;
                        dai[k] = drh[k] * h_prev[k] * r * (F::ONE - r);
                    }
                    dah.copy_from_slice(&dai);
                    let (dw_hrz, dw_hn) = g.weights.weight_hh.split_at_mut(2 * hid * hid);
                    add_outer(dw_hrz, &dah[..2 * hid], h_prev);
                    add_outer(dw_hn, &dah[2 * hid..], &rh);
                    add_matvec_t(dhp, w_hrz, &dah[..2 * hid]);
                }
            }
            add_assign(&mut g.weights.bias_hh, &dah);
            let row = (t * dims.batch + b) * inp;
            add_assign(&mut g.weights.bias_ih, &dai);
            add_outer(&mut g.weights.weight_ih, &dai, &x[row..row + inp]);
            add_matvec_t(&mut g.dx[row..row + inp], w.weight_ih, &dai);
        }
        dh_next = dh_prev;
    }
    g.dh0 = dh_next;
    Ok(())
}
