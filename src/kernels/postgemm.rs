//! The fused per-step elementwise kernels ("post-GEMM"), written once over [`SimdOps`].
//!
//! Forward: after the step's recurrent GEMM `acc = h_{t-1} · W_hhᵀ`, one pass over each batch
//! row adds the input projection `p` (already computed for every step by one GEMM before the
//! time loop) and the biases, applies the gate activations, updates the state and writes the
//! activated gates back over `p`: exactly what backward needs, so training and inference run
//! the same kernel.
//!
//! Backward: one pass turns the incoming `dh` (and `dc`) and the activated gates into the
//! pre-activation gate gradients `dG`, written over the gates, plus the direct paths of
//! `dh_{t-1}` (GRU) and `dc_{t-1}` (LSTM).
//!
//! Every kernel walks `H` in chunks of `S::LANES`; the tail runs the same vector body on
//! zero-padded copies, so an element's result never depends on its position.

use super::simd::{MAX_LANES, OneElem, SimdOps, array_from};
use crate::shape::RnnActivation;

/// Runs `body` over `n` elements of `K` input and `M` in/out slices, `S::LANES` at a time.
/// `body` gets the inputs and the current in/out values and overwrites the latter.
#[inline(always)]
fn map_lanes<S: SimdOps, const K: usize, const M: usize>(
    s: S,
    n: usize,
    ins: [&[S::Elem]; K],
    mut outs: [&mut [S::Elem]; M],
    body: impl Fn(&[S::V; K], &mut [S::V; M]),
) {
    let lanes = S::LANES;
    let zero = s.splat(S::Elem::default());
    let full = n - n % lanes;
    let mut j = 0;
    while j < full {
        let x: [S::V; K] = array_from(
            zero,
            #[inline(always)]
            |k| s.load(&ins[k][j..j + lanes]),
        );
        let mut y: [S::V; M] = array_from(
            zero,
            #[inline(always)]
            |m| s.load(&outs[m][j..j + lanes]),
        );
        body(&x, &mut y);
        for (o, v) in outs.iter_mut().zip(y) {
            s.store(&mut o[j..j + lanes], v);
        }
        j += lanes;
    }
    let rem = n - full;
    if rem > 0 {
        let pad_in: [[S::Elem; MAX_LANES]; K] = array_from(
            [S::Elem::default(); MAX_LANES],
            #[inline(always)]
            |k| {
                let mut b = [S::Elem::default(); MAX_LANES];
                b[..rem].copy_from_slice(&ins[k][full..n]);
                b
            },
        );
        let mut pad_out: [[S::Elem; MAX_LANES]; M] = array_from(
            [S::Elem::default(); MAX_LANES],
            #[inline(always)]
            |m| {
                let mut b = [S::Elem::default(); MAX_LANES];
                b[..rem].copy_from_slice(&outs[m][full..n]);
                b
            },
        );
        let x: [S::V; K] = array_from(
            zero,
            #[inline(always)]
            |k| s.load(&pad_in[k]),
        );
        let mut y: [S::V; M] = array_from(
            zero,
            #[inline(always)]
            |m| s.load(&pad_out[m]),
        );
        body(&x, &mut y);
        for ((o, buf), v) in outs.iter_mut().zip(pad_out.iter_mut()).zip(y) {
            s.store(buf, v);
            o[full..n].copy_from_slice(&buf[..rem]);
        }
    }
}

/// `(1 - v) * v` as `v - v*v`: the logistic derivative from the activated value.
#[inline(always)]
fn sigmoid_grad<S: SimdOps>(s: S, v: S::V) -> S::V {
    s.sub(v, s.mul(v, v))
}

/// `1 - v*v`: the tanh derivative from the activated value.
#[inline(always)]
fn tanh_grad<S: SimdOps>(s: S, v: S::V) -> S::V {
    s.sub(s.splat(one::<S>()), s.mul(v, v))
}

#[inline(always)]
fn one<S: SimdOps>() -> S::Elem {
    <S::Elem as OneElem>::ONE
}

/// Shapes of one step: `batch` rows of `hidden` units; gate rows are `gates * hidden` long.
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    pub batch: usize,
    pub hidden: usize,
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/// RNN forward: `h = act(p + acc + bias)`. `p`, `acc`: `[B, H]`; `bias`: `[H]` (b_ih + b_hh).
#[inline(always)]
pub(crate) fn rnn_forward<S: SimdOps>(
    s: S,
    sh: StepShape,
    act: RnnActivation,
    p: &[S::Elem],
    acc: &[S::Elem],
    bias: &[S::Elem],
    h: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&p[r.clone()], &acc[r.clone()], bias],
            [&mut h[r]],
            #[inline(always)]
            |x, y| {
                let a = s.add(s.add(x[0], x[1]), x[2]);
                y[0] = match act {
                    RnnActivation::Tanh => s.tanh(a),
                    RnnActivation::Relu => s.relu(a),
                };
            },
        );
    }
}

/// LSTM forward. `gates`: `[B, 4H]`, in: input projection, out: activated `i, f, g, o`;
/// `acc`: `[B, 4H]` recurrent GEMM; `bias`: `[4H]` (b_ih + b_hh); `c_prev`, `c`, `h`: `[B, H]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn lstm_forward<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    acc: &[S::Elem],
    bias: &[S::Elem],
    c_prev: &[S::Elem],
    c: &mut [S::Elem],
    h: &mut [S::Elem],
) {
    let hd = sh.hidden;
    let g4 = 4 * hd;
    let (bi, rest) = bias.split_at(hd);
    let (bf, rest) = rest.split_at(hd);
    let (bg, bo) = rest.split_at(hd);
    for b in 0..sh.batch {
        let row = b * g4..(b + 1) * g4;
        let a = &acc[row.clone()];
        let (gi, rest) = gates[row].split_at_mut(hd);
        let (gf, rest) = rest.split_at_mut(hd);
        let (gg, go) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [
                &a[..hd],
                &a[hd..2 * hd],
                &a[2 * hd..3 * hd],
                &a[3 * hd..],
                bi,
                bf,
                bg,
                bo,
                &c_prev[r.clone()],
            ],
            [gi, gf, gg, go, &mut c[r.clone()], &mut h[r]],
            #[inline(always)]
            |x, y| {
                let i = s.sigmoid(s.add(s.add(y[0], x[0]), x[4]));
                let f = s.sigmoid(s.add(s.add(y[1], x[1]), x[5]));
                let g = s.tanh(s.add(s.add(y[2], x[2]), x[6]));
                let o = s.sigmoid(s.add(s.add(y[3], x[3]), x[7]));
                let cn = s.mul_add(f, x[8], s.mul(i, g));
                y[0] = i;
                y[1] = f;
                y[2] = g;
                y[3] = o;
                y[4] = cn;
                y[5] = s.mul(o, s.tanh(cn));
            },
        );
    }
}

/// GRU reset-after forward. `gates`: `[B, 3H]`, in: input projection, out: activated `r, z, n`;
/// `acc`: `[B, 3H]`; `bias`: `[3H]` with `b_ir + b_hr`, `b_iz + b_hz`, `b_in`; `b_hn`: `[H]`;
/// `h_prev`, `h`: `[B, H]`; `grid`: `[B, H]` receives `W_hn h + b_hn` (kept for backward).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gru_reset_after_forward<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    acc: &[S::Elem],
    bias: &[S::Elem],
    b_hn: &[S::Elem],
    h_prev: &[S::Elem],
    h: &mut [S::Elem],
    grid: &mut [S::Elem],
) {
    let hd = sh.hidden;
    let g3 = 3 * hd;
    for b in 0..sh.batch {
        let row = b * g3..(b + 1) * g3;
        let a = &acc[row.clone()];
        let (gr, rest) = gates[row].split_at_mut(hd);
        let (gz, gn) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [
                &a[..hd],
                &a[hd..2 * hd],
                &a[2 * hd..],
                &bias[..hd],
                &bias[hd..2 * hd],
                &bias[2 * hd..],
                b_hn,
                &h_prev[r.clone()],
            ],
            [gr, gz, gn, &mut h[r.clone()], &mut grid[r]],
            #[inline(always)]
            |x, y| {
                let rg = s.sigmoid(s.add(s.add(y[0], x[0]), x[3]));
                let zg = s.sigmoid(s.add(s.add(y[1], x[1]), x[4]));
                let hn = s.add(x[2], x[6]);
                let n = s.tanh(s.mul_add(rg, hn, s.add(y[2], x[5])));
                // h = (1 - z) * n + z * h_prev = n + z * (h_prev - n)
                y[3] = s.mul_add(zg, s.sub(x[7], n), n);
                y[0] = rg;
                y[1] = zg;
                y[2] = n;
                y[4] = hn;
            },
        );
    }
}

/// GRU reset-before forward, part 1 (before the candidate GEMM). `gates`: `[B, 3H]` (r and z
/// blocks activated in place; n untouched); `acc_rz`: `[B, 2H]` = `h_{t-1} · W_h{r,z}ᵀ`;
/// `bias_rz`: `[2H]`; `h_prev`: `[B, H]`; `rh`: `[B, H]` receives `r * h_{t-1}`.
#[inline(always)]
pub(crate) fn gru_reset_before_forward_gates<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    acc_rz: &[S::Elem],
    bias_rz: &[S::Elem],
    h_prev: &[S::Elem],
    rh: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let a = &acc_rz[b * 2 * hd..(b + 1) * 2 * hd];
        let (gr, rest) = gates[b * 3 * hd..(b + 1) * 3 * hd].split_at_mut(hd);
        let gz = &mut rest[..hd];
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [
                &a[..hd],
                &a[hd..],
                &bias_rz[..hd],
                &bias_rz[hd..],
                &h_prev[r.clone()],
            ],
            [gr, gz, &mut rh[r]],
            #[inline(always)]
            |x, y| {
                let rg = s.sigmoid(s.add(s.add(y[0], x[0]), x[2]));
                let zg = s.sigmoid(s.add(s.add(y[1], x[1]), x[3]));
                y[0] = rg;
                y[1] = zg;
                y[2] = s.mul(rg, x[4]);
            },
        );
    }
}

/// GRU reset-before forward, part 2. `gates`: `[B, 3H]` (z activated; n block in: input
/// projection, out: activated candidate); `acc_n`: `[B, H]` = `(r*h) · W_hnᵀ`; `bias_n`: `[H]`
/// (b_in + b_hn); `h_prev`, `h`: `[B, H]`. `h = (1 - z) * h_prev + z * n`.
#[inline(always)]
pub(crate) fn gru_reset_before_forward_state<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    acc_n: &[S::Elem],
    bias_n: &[S::Elem],
    h_prev: &[S::Elem],
    h: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let (_, rest) = gates[b * 3 * hd..(b + 1) * 3 * hd].split_at_mut(hd);
        let (gz, gn) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&acc_n[r.clone()], bias_n, &h_prev[r.clone()], gz],
            [gn, &mut h[r]],
            #[inline(always)]
            |x, y| {
                let n = s.tanh(s.add(s.add(y[0], x[0]), x[1]));
                // h = h_prev + z * (n - h_prev)
                y[1] = s.mul_add(x[3], s.sub(n, x[2]), x[2]);
                y[0] = n;
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// RNN backward: `dG = dh * act'(.)` from the output `h`. `gates`: `[B, H]` receives dG.
#[inline(always)]
pub(crate) fn rnn_backward<S: SimdOps>(
    s: S,
    sh: StepShape,
    act: RnnActivation,
    h: &[S::Elem],
    dh: &[S::Elem],
    gates: &mut [S::Elem],
) {
    let n = sh.batch * sh.hidden;
    map_lanes(
        s,
        n,
        [&h[..n], &dh[..n]],
        [&mut gates[..n]],
        #[inline(always)]
        |x, y| {
            y[0] = match act {
                RnnActivation::Tanh => s.mul(x[1], tanh_grad(s, x[0])),
                // h > 0 exactly where the pre-activation is > 0.
                RnnActivation::Relu => s.mul(x[1], s.step(x[0])),
            };
        },
    );
}

/// LSTM backward. `gates`: `[B, 4H]`, in: activated `i, f, g, o`, out: their pre-activation
/// gradients; `c_prev`, `c`: `[B, H]` states of this step; `dh`: `[B, H]` total gradient
/// reaching `h_t`; `dc`: `[B, H]`, in: gradient reaching `c_t` from later steps, out: `dc_{t-1}`.
#[inline(always)]
pub(crate) fn lstm_backward<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    c_prev: &[S::Elem],
    c: &[S::Elem],
    dh: &[S::Elem],
    dc: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let (gi, rest) = gates[b * 4 * hd..(b + 1) * 4 * hd].split_at_mut(hd);
        let (gf, rest) = rest.split_at_mut(hd);
        let (gg, go) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&c_prev[r.clone()], &c[r.clone()], &dh[r.clone()]],
            [gi, gf, gg, go, &mut dc[r]],
            #[inline(always)]
            |x, y| {
                let (i, f, g, o) = (y[0], y[1], y[2], y[3]);
                let tc = s.tanh(x[1]);
                let dh = x[2];
                // dc_t total = dc_{from t+1} + dh * o * (1 - tanh(c)^2)
                let dct = s.mul_add(s.mul(dh, o), tanh_grad(s, tc), y[4]);
                y[0] = s.mul(s.mul(dct, g), sigmoid_grad(s, i));
                y[1] = s.mul(s.mul(dct, x[0]), sigmoid_grad(s, f));
                y[2] = s.mul(s.mul(dct, i), tanh_grad(s, g));
                y[3] = s.mul(s.mul(dh, tc), sigmoid_grad(s, o));
                y[4] = s.mul(dct, f);
            },
        );
    }
}

/// GRU reset-after backward. `gates`: `[B, 3H]`, in: activated `r, z, n`, out: gradients of
/// the pre-activations as seen by the input projection (`dG_ih`); `grid`: `[B, H]`, in:
/// `W_hn h + b_hn`, out: `dn_pre * r` (the n block of `dG_hh`); `h_prev`, `dh`: `[B, H]`;
/// `dh_prev`: `[B, H]` receives the direct path `dh * z` (the GEMM adds the rest).
#[inline(always)]
pub(crate) fn gru_reset_after_backward<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    grid: &mut [S::Elem],
    h_prev: &[S::Elem],
    dh: &[S::Elem],
    dh_prev: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let (gr, rest) = gates[b * 3 * hd..(b + 1) * 3 * hd].split_at_mut(hd);
        let (gz, gn) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&h_prev[r.clone()], &dh[r.clone()]],
            [gr, gz, gn, &mut grid[r.clone()], &mut dh_prev[r]],
            #[inline(always)]
            |x, y| {
                let (rg, zg, n, hn) = (y[0], y[1], y[2], y[3]);
                let dh = x[1];
                let dn_pre = s.mul(s.sub(dh, s.mul(dh, zg)), tanh_grad(s, n));
                let dz_pre = s.mul(s.mul(dh, s.sub(x[0], n)), sigmoid_grad(s, zg));
                let dr_pre = s.mul(s.mul(dn_pre, hn), sigmoid_grad(s, rg));
                y[0] = dr_pre;
                y[1] = dz_pre;
                y[2] = dn_pre;
                y[3] = s.mul(dn_pre, rg);
                y[4] = s.mul(dh, zg);
            },
        );
    }
}

/// GRU reset-before backward, part 1. `gates`: `[B, 3H]` (z and n blocks, in: activated, out:
/// pre-activation gradients; r untouched); `h_prev`, `dh`: `[B, H]`; `dh_prev`: `[B, H]`
/// receives the direct path `dh * (1 - z)`.
#[inline(always)]
pub(crate) fn gru_reset_before_backward_candidate<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    h_prev: &[S::Elem],
    dh: &[S::Elem],
    dh_prev: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let (_, rest) = gates[b * 3 * hd..(b + 1) * 3 * hd].split_at_mut(hd);
        let (gz, gn) = rest.split_at_mut(hd);
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&h_prev[r.clone()], &dh[r.clone()]],
            [gz, gn, &mut dh_prev[r]],
            #[inline(always)]
            |x, y| {
                let (zg, n) = (y[0], y[1]);
                let dh = x[1];
                y[0] = s.mul(s.mul(dh, s.sub(n, x[0])), sigmoid_grad(s, zg));
                y[1] = s.mul(s.mul(dh, zg), tanh_grad(s, n));
                y[2] = s.sub(dh, s.mul(dh, zg));
            },
        );
    }
}

/// GRU reset-before backward, part 2, after `drh = dn_pre · W_hn`. `gates`: `[B, 3H]` (r block,
/// in: activated, out: pre-activation gradient); `h_prev`, `drh`: `[B, H]`; `dh_prev`: `[B, H]`,
/// `+= drh * r`.
#[inline(always)]
pub(crate) fn gru_reset_before_backward_reset<S: SimdOps>(
    s: S,
    sh: StepShape,
    gates: &mut [S::Elem],
    h_prev: &[S::Elem],
    drh: &[S::Elem],
    dh_prev: &mut [S::Elem],
) {
    let hd = sh.hidden;
    for b in 0..sh.batch {
        let gr = &mut gates[b * 3 * hd..b * 3 * hd + hd];
        let r = b * hd..(b + 1) * hd;
        map_lanes(
            s,
            hd,
            [&h_prev[r.clone()], &drh[r.clone()]],
            [gr, &mut dh_prev[r]],
            #[inline(always)]
            |x, y| {
                let rg = y[0];
                y[0] = s.mul(s.mul(x[1], x[0]), sigmoid_grad(s, rg));
                y[1] = s.mul_add(x[1], rg, y[1]);
            },
        );
    }
}
