//! Scalar reference implementation: the oracle the SIMD kernels are tested against.
//!
//! Written straight from the equations below with plain loops: no blocking, no SIMD, no
//! workspace reuse. It is slow and allocates freely; its only job is to be obviously right.
//! Allocating freely does not mean aborting: every buffer whose size grows with `T` or `B`
//! (the forward trace, the outputs, the gradients, the per-step states) is allocated with
//! `try_reserve`, and one the allocator refuses is an [`Error::AllocationFailed`]. (Per-row
//! scratch of `G·H` elements, smaller than the weights already in memory, is not.)
//! Generic over [`Float`] (`f32` and `f64`); the f64 instance is checked against finite
//! differences in `tests/gradcheck.rs`.
//!
//! # Layout
//!
//! Time-major, row-major: `x [T, B, I]`, `y [T, B, H]`, states `h0`, `c0`, `h_n`, `c_n` `[B, H]`.
//! Weights in PyTorch's layout (see [`LayerWeights`]): `weight_ih [G*H, I]`, `weight_hh [G*H, H]`,
//! `bias_ih [G*H]`, `bias_hh [G*H]`, gate row blocks LSTM `i, f, g, o`, GRU `r, z, n`.
//! Below, `W_i*` / `b_i*` is a gate's block of `weight_ih` / `bias_ih`, `W_h*` / `b_h*` its block of
//! `weight_hh` / `bias_hh`, `h = h_{t-1}`, `σ` the logistic function, `*` elementwise.
//!
//! # Equations (one step `t`, one batch row)
//!
//! - RNN ([`CellKind::Rnn`]): `h_t = act(W_ih x_t + b_ih + W_hh h + b_hh)`, `act` = `tanh` or
//!   `relu`. The derivative of `relu` is taken as 1 where the pre-activation is `> 0`, else 0.
//! - LSTM ([`CellKind::Lstm`]): with `a_k = W_ik x_t + b_ik + W_hk h + b_hk` for `k ∈ {i, f, g, o}`,
//!   `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`,
//!   `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)`.
//! - GRU reset-after ([`GruVariant::ResetAfter`], PyTorch's `nn.GRU`):
//!   `r = σ(W_ir x_t + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x_t + b_iz + W_hz h + b_hz)`,
//!   `n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn))`, `h_t = (1 - z) * n + z * h`.
//! - GRU reset-before ([`GruVariant::ResetBefore`], the classic GRU): `r`, `z` as above,
//!   `n = tanh(W_in x_t + b_in + W_hn (r * h) + b_hn)`, `h_t = (1 - z) * h + z * n`
//!   (here `z` weights the **new** candidate).
//!
//! `y[t] = h_t`, `h_n = h_{T-1}`, `c_n = c_{T-1}`; absent `h0` / `c0` mean zeros.
//!
//! # Backward
//!
//! [`backward`] returns `dL/d(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)` for the loss
//! `L = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n)` (absent upstream gradients mean zeros),
//! the convention of the PyTorch fixtures. It is hand-written BPTT: a reverse loop over `t` that
//! carries `dh` (and `dc`), takes each gate's derivative from its activated value
//! (`σ' = σ (1 - σ)`, `tanh' = 1 - tanh²`, `relu' = [h > 0]`) and accumulates the weight gradients
//! as outer products over all steps and batch rows.
//!
//! [`CellKind::Rnn`]: crate::CellKind::Rnn
//! [`CellKind::Lstm`]: crate::CellKind::Lstm
//! [`GruVariant::ResetAfter`]: crate::GruVariant::ResetAfter
//! [`GruVariant::ResetBefore`]: crate::GruVariant::ResetBefore

mod gru;
mod lstm;
mod rnn;

use crate::error::{
    Error, Result, check_len, check_opt_len, mul_len, try_to_vec, try_with_capacity, try_zeroed,
};
use crate::float::Float;
use crate::shape::{CellKind, Dims, GruVariant};
use crate::weights::{LayerGrads, LayerWeights};

/// The result of [`forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOutput<F> {
    /// Every step's hidden state, `[T, B, H]`.
    pub y: Vec<F>,
    /// The hidden state after the last step, `[B, H]`.
    pub h_n: Vec<F>,
    /// The cell state after the last step, `[B, H]`; `Some` for the LSTM only.
    pub c_n: Option<Vec<F>>,
}

/// The result of [`backward`]: the gradient of the loss with respect to every input.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceGradients<F> {
    /// `dL/dx`, `[T, B, I]`.
    pub dx: Vec<F>,
    /// `dL/dh0`, `[B, H]`.
    pub dh0: Vec<F>,
    /// `dL/dc0`, `[B, H]`; `Some` for the LSTM only.
    pub dc0: Option<Vec<F>>,
    /// `dL/d(weight_ih, weight_hh, bias_ih, bias_hh)`.
    pub weights: LayerGrads<F>,
}

/// Runs the layer over the whole sequence.
///
/// `x [T, B, I]`; `h0`, `c0` `[B, H]` (absent: zeros; `c0` is for the LSTM only).
///
/// # Errors
///
/// [`Error::ZeroDim`] / [`Error::SizeOverflow`] for unusable `dims`, [`Error::BufferLength`] for a
/// buffer of the wrong length, [`Error::UnexpectedBuffer`] for `c0` given to a cell without a
/// cell state, [`Error::AllocationFailed`] if the trace of the forward pass (the states of every
/// step and, but for the RNN, the gates) does not fit in memory.
pub fn forward<F: Float>(
    cell: CellKind,
    dims: Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    h0: Option<&[F]>,
    c0: Option<&[F]>,
) -> Result<ReferenceOutput<F>> {
    validate_inputs(cell, &dims, w, x, h0, c0)?;
    let Trace { mut h, c, .. } = trace(cell, &dims, w, x, h0, c0)?;
    let s = dims.state_len();
    let t = dims.seq_len;
    let h_n = try_to_vec("reference h_n [B, H]", &h[t * s..])?;
    let c_n = match c {
        Some(c) => Some(try_to_vec("reference c_n [B, H]", &c[t * s..])?),
        None => None,
    };
    // `y` is `h` without `h0`: moved down in place, not copied.
    h.drain(..s);
    Ok(ReferenceOutput { y: h, h_n, c_n })
}

/// Gradients of `L = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n)` with respect to `x`, `h0`,
/// `c0` and the weights, by backpropagation through time.
///
/// Takes the forward inputs (it reruns the forward pass) and the upstream gradients
/// `dy [T, B, H]`, `dh_n`, `dc_n` `[B, H]` (absent: zeros; `dc_n` is for the LSTM only).
///
/// # Errors
///
/// As [`forward`], plus [`Error::BufferLength`] for upstream gradients of the wrong length and
/// [`Error::UnexpectedBuffer`] for `dc_n` given to a cell without a cell state.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    cell: CellKind,
    dims: Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    h0: Option<&[F]>,
    c0: Option<&[F]>,
    dy: Option<&[F]>,
    dh_n: Option<&[F]>,
    dc_n: Option<&[F]>,
) -> Result<ReferenceGradients<F>> {
    validate_inputs(cell, &dims, w, x, h0, c0)?;
    check_opt_len("dy [T, B, H]", dy, dims.y_len())?;
    check_opt_len("dh_n [B, H]", dh_n, dims.state_len())?;
    if dc_n.is_some() && !cell.has_cell_state() {
        return Err(Error::UnexpectedBuffer {
            what: "dc_n [B, H]",
            why: "only the LSTM has a cell state",
        });
    }
    check_opt_len("dc_n [B, H]", dc_n, dims.state_len())?;

    let tr = trace(cell, &dims, w, x, h0, c0)?;
    let up = Upstream {
        dy,
        dh_n,
        dc_n,
        state_len: dims.state_len(),
    };
    let s = dims.state_len();
    let mut g = ReferenceGradients {
        dx: try_zeroed("reference dx [T, B, I]", dims.x_len())?,
        dh0: try_zeroed("reference dh0 [B, H]", s)?,
        dc0: match cell.has_cell_state() {
            true => Some(try_zeroed("reference dc0 [B, H]", s)?),
            false => None,
        },
        weights: LayerGrads::zeros(cell, dims.input, dims.hidden)?,
    };
    match cell {
        CellKind::Rnn(act) => rnn::backward(act, &dims, w, x, &tr, &up, &mut g)?,
        CellKind::Lstm => lstm::backward(&dims, w, x, &tr, &up, &mut g)?,
        CellKind::Gru(variant) => gru::backward(variant, &dims, w, x, &tr, &up, &mut g)?,
    }
    Ok(g)
}

/// Checks the weights, `x`, `h0` and `c0` against `cell` and `dims`.
fn validate_inputs<F>(
    cell: CellKind,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    h0: Option<&[F]>,
    c0: Option<&[F]>,
) -> Result<()> {
    // `Dims::validate` computes `seq_len + 1` unchecked; refuse the one value that overflows
    // there before it runs.
    if dims.seq_len == usize::MAX {
        return Err(Error::SizeOverflow { what: "T+1" });
    }
    // Validates `dims` (nonzero, no overflow) before any length is computed from it.
    w.validate(cell, dims)?;
    check_len("x [T, B, I]", x, dims.x_len())?;
    check_opt_len("h0 [B, H]", h0, dims.state_len())?;
    if c0.is_some() && !cell.has_cell_state() {
        return Err(Error::UnexpectedBuffer {
            what: "c0 [B, H]",
            why: "only the LSTM has a cell state",
        });
    }
    check_opt_len("c0 [B, H]", c0, dims.state_len())?;
    Ok(())
}

/// Everything the forward pass computed that backward needs.
struct Trace<F> {
    /// Hidden states `h_{-1} = h0, h_0, ..., h_{T-1}`: `[T+1, B, H]`.
    h: Vec<F>,
    /// LSTM cell states `c_{-1} = c0, c_0, ..., c_{T-1}`: `[T+1, B, H]`.
    c: Option<Vec<F>>,
    /// Activated gates of every step: `[T, B, G*H]` (RNN: empty, `h` is enough).
    gates: Vec<F>,
    /// GRU reset-after only: `W_hn h_{t-1} + b_hn` of every step, `[T, B, H]` (else empty).
    hn: Vec<F>,
}

/// The upstream gradients, absent ones meaning zeros.
struct Upstream<'a, F> {
    dy: Option<&'a [F]>,
    dh_n: Option<&'a [F]>,
    dc_n: Option<&'a [F]>,
    state_len: usize,
}

impl<F: Float> Upstream<'_, F> {
    /// `dy[t]`, `[B, H]`, zeros if absent.
    fn dy_step(&self, t: usize) -> Result<Vec<F>> {
        let s = self.state_len;
        match self.dy {
            Some(dy) => try_to_vec("reference dy_t [B, H]", &dy[t * s..(t + 1) * s]),
            None => try_zeroed("reference dy_t [B, H]", s),
        }
    }

    /// `dh_n`, zeros if absent.
    fn dh_n(&self) -> Result<Vec<F>> {
        match self.dh_n {
            Some(v) => try_to_vec("reference dh [B, H]", v),
            None => try_zeroed("reference dh [B, H]", self.state_len),
        }
    }

    /// `dc_n`, zeros if absent.
    fn dc_n(&self) -> Result<Vec<F>> {
        match self.dc_n {
            Some(v) => try_to_vec("reference dc [B, H]", v),
            None => try_zeroed("reference dc [B, H]", self.state_len),
        }
    }
}

/// A zeroed `[B, H]` state gradient for one step.
fn state_grad<F: Float>(s: usize) -> Result<Vec<F>> {
    try_zeroed("reference dh, dc [B, H]", s)
}

impl<F: Float> Trace<F> {
    /// The buffers of a trace of `cell` over `dims`, zeros but for `h0` and `c0` (absent:
    /// zeros) as the states of step -1. Every buffer is reserved before any is written, so
    /// that one the allocator refuses leaves the others untouched (see `try_with_capacity`):
    /// an LSTM at T = 2^21, H = 2048 has 16 GiB of states and 64 GiB of gates, and a machine
    /// that grants the states but not the gates must not have written 32 GiB first.
    fn new(cell: CellKind, dims: &Dims, h0: Option<&[F]>, c0: Option<&[F]>) -> Result<Self> {
        let s = dims.state_len();
        let rows = mul_len("reference T*B", dims.seq_len, dims.batch)?;
        let states = mul_len("reference states [T+1, B, H]", dims.seq_len + 1, s)?;
        let gates = match cell {
            CellKind::Rnn(_) => 0,
            _ => mul_len(
                "reference gates [T, B, G*H]",
                rows,
                cell.gates() * dims.hidden,
            )?,
        };
        let hn = match cell {
            CellKind::Gru(GruVariant::ResetAfter) => dims.seq_len * s,
            _ => 0,
        };
        let lstm = cell.has_cell_state();
        let mut tr = Trace {
            h: try_with_capacity("reference h [T+1, B, H]", states)?,
            c: match lstm {
                true => Some(try_with_capacity("reference c [T+1, B, H]", states)?),
                false => None,
            },
            gates: try_with_capacity("reference gates [T, B, G*H]", gates)?,
            hn: try_with_capacity("reference W_hn h + b_hn [T, B, H]", hn)?,
        };
        // All reserved: now written.
        let initial = |v: &mut Vec<F>, s0: Option<&[F]>| {
            v.resize(states, F::ZERO);
            if let Some(s0) = s0 {
                v[..s].copy_from_slice(s0);
            }
        };
        initial(&mut tr.h, h0);
        if let Some(c) = &mut tr.c {
            initial(c, c0);
        }
        tr.gates.resize(gates, F::ZERO);
        tr.hn.resize(hn, F::ZERO);
        Ok(tr)
    }
}

/// Runs the forward pass and keeps what backward needs. Inputs must be validated.
fn trace<F: Float>(
    cell: CellKind,
    dims: &Dims,
    w: &LayerWeights<'_, F>,
    x: &[F],
    h0: Option<&[F]>,
    c0: Option<&[F]>,
) -> Result<Trace<F>> {
    let mut tr = Trace::new(cell, dims, h0, c0)?;
    match cell {
        CellKind::Rnn(act) => rnn::forward(act, dims, w, x, &mut tr),
        CellKind::Lstm => lstm::forward(dims, w, x, &mut tr),
        CellKind::Gru(variant) => gru::forward(variant, dims, w, x, &mut tr),
    }
    Ok(tr)
}

/// `out[r] += sum_k w[r, k] * v[k]` for a row-major `w [out.len(), v.len()]`.
fn add_matvec<F: Float>(out: &mut [F], w: &[F], v: &[F]) {
    debug_assert_eq!(w.len(), out.len() * v.len());
    for (o, row) in out.iter_mut().zip(w.chunks_exact(v.len())) {
        let mut acc = F::ZERO;
        for (&wk, &vk) in row.iter().zip(v) {
            acc += wk * vk;
        }
        *o += acc;
    }
}

/// `out[k] += sum_r w[r, k] * u[r]` (`out += wᵀ u`) for a row-major `w [u.len(), out.len()]`.
fn add_matvec_t<F: Float>(out: &mut [F], w: &[F], u: &[F]) {
    debug_assert_eq!(w.len(), out.len() * u.len());
    for (&ur, row) in u.iter().zip(w.chunks_exact(out.len())) {
        for (o, &wk) in out.iter_mut().zip(row) {
            *o += wk * ur;
        }
    }
}

/// `dw[r, k] += u[r] * v[k]` for a row-major `dw [u.len(), v.len()]`.
fn add_outer<F: Float>(dw: &mut [F], u: &[F], v: &[F]) {
    debug_assert_eq!(dw.len(), u.len() * v.len());
    for (&ur, row) in u.iter().zip(dw.chunks_exact_mut(v.len())) {
        for (d, &vk) in row.iter_mut().zip(v) {
            *d += ur * vk;
        }
    }
}

/// `acc[k] += v[k]`.
fn add_assign<F: Float>(acc: &mut [F], v: &[F]) {
    debug_assert_eq!(acc.len(), v.len());
    for (a, &b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// Accumulates the gradients of one step and one batch row through the affine maps that feed
/// the gates, when both maps see the same vectors: `a = W_ih x_t + b_ih + W_hh h + b_hh` with
/// `da = dL/da` (`[G*H]`). Adds to the weight gradients, `dx_t` and `dh` (`dL/dh_{t-1}`).
fn affine_backward<F: Float>(
    w: &LayerWeights<'_, F>,
    g: &mut LayerGrads<F>,
    da: &[F],
    x_t: &[F],
    h_prev: &[F],
    dx_t: &mut [F],
    dh_prev: &mut [F],
) {
    add_assign(&mut g.bias_ih, da);
    add_assign(&mut g.bias_hh, da);
    add_outer(&mut g.weight_ih, da, x_t);
    add_outer(&mut g.weight_hh, da, h_prev);
    add_matvec_t(dx_t, w.weight_ih, da);
    add_matvec_t(dh_prev, w.weight_hh, da);
}
