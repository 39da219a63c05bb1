//! Conversion to and from the weight tensors of ONNX's `RNN`, `LSTM` and `GRU` operators.
//!
//! # ONNX layout
//!
//! Each operator takes `W [num_directions, G*H, I]`, `R [num_directions, G*H, H]` and the
//! optional `B [num_directions, 2*G*H]` = `[Wb, Rb]` (input biases of every gate, then recurrent
//! biases; absent means zeros). Direction 0 is forward, 1 reverse. Stacking the tensors of two
//! single-direction layers along axis 0 is concatenating their `Vec`s.
//!
//! # Mapping to [`Layer`] (PyTorch layout)
//!
//! `W` ↔ `weight_ih`, `R` ↔ `weight_hh`, `Wb` ↔ `bias_ih`, `Rb` ↔ `bias_hh`, gate block by gate
//! block (each block is `H` rows, or `H` bias entries):
//!
//! | operator | ONNX gate order | our order  | our block `k` ← ONNX block |
//! |----------|-----------------|------------|----------------------------|
//! | `RNN`    | one block       | one block  | `0 ← 0`                    |
//! | `LSTM`   | `i, o, f, c`    | `i, f, g, o` | `i ← 0, f ← 2, g ← 3, o ← 1` (ONNX's `c` is our `g`) |
//! | `GRU`    | `z, r, h`       | `r, z, n`  | `r ← 1, z ← 0, n ← 2`      |
//!
//! # The two GRUs
//!
//! ONNX's GRU always has `H_t = (1 - z) * h + z * H_{t-1}` (`z` weights the **old** state) and
//! its attribute `linear_before_reset` places the reset gate:
//!
//! - `linear_before_reset = 1`: `h = tanh(W_h x + Wb_h + r * (R_h H_{t-1} + Rb_h))`. This is our
//!   [`GruVariant::ResetAfter`] (PyTorch's GRU), with the same `z` convention: blocks are
//!   reordered, values copied unchanged.
//! - `linear_before_reset = 0` (the default): `h = tanh(W_h x + Wb_h + R_h (r * H_{t-1}) + Rb_h)`.
//!   This is our [`GruVariant::ResetBefore`], which however uses the classic convention
//!   `h_t = (1 - z) * h_{t-1} + z * n` (`z` weights the **new** candidate). Since
//!   `1 - σ(a) = σ(-a)`, our `z` is ONNX's `1 - z` when its pre-activation is negated: the `z`
//!   rows of `W` and `R` and the `z` entries of `Wb` and `Rb` change sign in both directions of
//!   the conversion. Negation is exact, so the round trip is still bitwise lossless.
//!
//! # What is not representable
//!
//! Only the operators' default activations (`Sigmoid`, `Tanh`, `Tanh` for the LSTM; `Sigmoid`,
//! `Tanh` for the GRU; `Tanh` or `Relu` for the RNN), no `clip`, LSTM `input_forget = 0` and no
//! peepholes (`P` absent or all zeros, checked by [`from_onnx`]). Other attribute values change
//! the function and must be refused by the caller, who reads the model's attributes.

use super::Direction;
use crate::error::{Error, Result, check_len, mul_len};
use crate::float::Float;
use crate::layer::Layer;
use crate::shape::{CellKind, GruVariant, RnnActivation};
use crate::stack::{Directions, Stack};
use crate::weights::LayerWeights;

/// An ONNX recurrent operator with the attributes that choose the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnnxOp {
    /// `RNN` with `activations = [act]`.
    Rnn(RnnActivation),
    /// `LSTM` with the default activations, no peepholes, `input_forget = 0`.
    Lstm,
    /// `GRU` with the default activations and the given `linear_before_reset` (`true` = 1).
    Gru {
        /// ONNX's `linear_before_reset != 0`.
        linear_before_reset: bool,
    },
}

impl OnnxOp {
    /// The cell of ours that computes the same function.
    pub const fn cell(self) -> CellKind {
        match self {
            OnnxOp::Rnn(a) => CellKind::Rnn(a),
            OnnxOp::Lstm => CellKind::Lstm,
            OnnxOp::Gru {
                linear_before_reset: true,
            } => CellKind::Gru(GruVariant::ResetAfter),
            OnnxOp::Gru {
                linear_before_reset: false,
            } => CellKind::Gru(GruVariant::ResetBefore),
        }
    }

    /// The ONNX operator that computes the same function as `cell`.
    pub const fn from_cell(cell: CellKind) -> OnnxOp {
        match cell {
            CellKind::Rnn(a) => OnnxOp::Rnn(a),
            CellKind::Lstm => OnnxOp::Lstm,
            CellKind::Gru(GruVariant::ResetAfter) => OnnxOp::Gru {
                linear_before_reset: true,
            },
            CellKind::Gru(GruVariant::ResetBefore) => OnnxOp::Gru {
                linear_before_reset: false,
            },
        }
    }
}

/// For each of our gate blocks `k`: the ONNX block it comes from, and whether its values change
/// sign (the `z` block of the reset-before GRU).
fn block_map(cell: CellKind) -> &'static [(usize, bool)] {
    match cell {
        CellKind::Rnn(_) => &[(0, false)],
        // ours i, f, g, o  <-  ONNX i, o, f, c
        CellKind::Lstm => &[(0, false), (2, false), (3, false), (1, false)],
        // ours r, z, n  <-  ONNX z, r, h
        CellKind::Gru(GruVariant::ResetAfter) => &[(1, false), (0, false), (2, false)],
        CellKind::Gru(GruVariant::ResetBefore) => &[(1, false), (0, true), (2, false)],
    }
}

/// Copies `src`'s gate blocks (each `block` elements) into `dst`, ours block `k` from/to ONNX
/// block `map[k].0`, negated where `map[k].1`. `to_onnx` picks the direction of the copy.
fn permute<F: Float>(map: &[(usize, bool)], block: usize, src: &[F], dst: &mut [F], to_onnx: bool) {
    for (k, &(j, neg)) in map.iter().enumerate() {
        let (s, d) = if to_onnx { (k, j) } else { (j, k) };
        let from = &src[s * block..(s + 1) * block];
        let to = &mut dst[d * block..(d + 1) * block];
        for (o, v) in to.iter_mut().zip(from) {
            *o = if neg { -*v } else { *v };
        }
    }
}

/// One direction's ONNX tensors, owned (`num_directions = 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxWeights<F> {
    /// The operator and the attributes that matter.
    pub op: OnnxOp,
    /// ONNX's input width `I` (the last extent of `W`).
    pub input_size: usize,
    /// ONNX's `hidden_size` attribute `H`.
    pub hidden_size: usize,
    /// `W [1, G*H, I]`.
    pub w: Vec<F>,
    /// `R [1, G*H, H]`.
    pub r: Vec<F>,
    /// `B [1, 2*G*H]` = `[Wb, Rb]`.
    pub b: Vec<F>,
}

impl<F: Float> OnnxWeights<F> {
    /// Borrowed views of the tensors, for [`from_onnx`].
    pub fn tensors(&self) -> OnnxTensors<'_, F> {
        OnnxTensors {
            w: &self.w,
            r: &self.r,
            b: Some(&self.b),
            p: None,
        }
    }

    /// The dimensions, for [`from_onnx`].
    pub fn dims(&self) -> OnnxDims {
        OnnxDims {
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_directions: 1,
        }
    }
}

/// Borrowed ONNX tensors, all directions (`[num_directions, ...]`), row-major.
#[derive(Debug, Clone, Copy)]
pub struct OnnxTensors<'a, F> {
    /// `W [num_directions, G*H, I]`.
    pub w: &'a [F],
    /// `R [num_directions, G*H, H]`.
    pub r: &'a [F],
    /// `B [num_directions, 2*G*H]`, or `None` for ONNX's absent input (zeros).
    pub b: Option<&'a [F]>,
    /// LSTM peepholes `P [num_directions, 3*H]`, or `None`. Only all zeros is accepted (we
    /// have no peepholes); ignored for other operators, which have no `P`.
    pub p: Option<&'a [F]>,
}

/// The extents of ONNX tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnnxDims {
    /// Input width `I`.
    pub input_size: usize,
    /// The `hidden_size` attribute `H`.
    pub hidden_size: usize,
    /// 1 (`forward` or `reverse`) or 2 (`bidirectional`).
    pub num_directions: usize,
}

/// Converts a layer to the ONNX operator that computes the same function, and its tensors.
/// Exact (a permutation of blocks, and for the reset-before GRU a sign change of its `z`
/// block); `from_onnx` of the result gives back the same bits.
pub fn to_onnx<F: Float>(layer: &Layer<F>) -> OnnxWeights<F> {
    let cell = layer.cell();
    let (i, h) = (layer.input_size(), layer.hidden_size());
    let gh = cell.gates() * h;
    let map = block_map(cell);
    let wts = layer.weights();
    let mut w = vec![F::ZERO; gh * i];
    let mut r = vec![F::ZERO; gh * h];
    let mut b = vec![F::ZERO; 2 * gh];
    permute(map, h * i, wts.weight_ih, &mut w, true);
    permute(map, h * h, wts.weight_hh, &mut r, true);
    let (wb, rb) = b.split_at_mut(gh);
    permute(map, h, wts.bias_ih, wb, true);
    permute(map, h, wts.bias_hh, rb, true);
    OnnxWeights {
        op: OnnxOp::from_cell(cell),
        input_size: i,
        hidden_size: h,
        w,
        r,
        b,
    }
}

/// One ONNX node's tensors for layer `k` of a stack, both directions in one tensor where the
/// stack is bidirectional (`direction = "bidirectional"`, `num_directions = 2`, forward at
/// index 0): `W [D, G*H, in]`, `R [D, G*H, H]`, `B [D, 2*G*H]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode<F> {
    /// The operator and the attributes that matter.
    pub op: OnnxOp,
    /// The extents, `num_directions` included.
    pub dims: OnnxDims,
    /// `W [num_directions, G*H, I]`.
    pub w: Vec<F>,
    /// `R [num_directions, G*H, H]`.
    pub r: Vec<F>,
    /// `B [num_directions, 2*G*H]`.
    pub b: Vec<F>,
}

impl<F: Float> OnnxNode<F> {
    /// Borrowed views of the tensors, for [`from_onnx`] and [`stack_from_onnx`].
    pub fn tensors(&self) -> OnnxTensors<'_, F> {
        OnnxTensors {
            w: &self.w,
            r: &self.r,
            b: Some(&self.b),
            p: None,
        }
    }
}

/// Layer `k` of `stack` as one ONNX node ([`OnnxNode`]), both directions stacked along the
/// leading axis for a bidirectional stack; `None` past the last layer. Exact, as [`to_onnx`].
pub fn stack_layer_to_onnx<F: Float>(stack: &Stack<F>, k: usize) -> Option<OnnxNode<F>> {
    let dirs: Vec<OnnxWeights<F>> = stack
        .directions()
        .iter()
        .map(|dir| stack.layer(k, dir).map(to_onnx))
        .collect::<Option<_>>()?;
    let first = &dirs[0];
    Some(OnnxNode {
        op: first.op,
        dims: OnnxDims {
            input_size: first.input_size,
            hidden_size: first.hidden_size,
            num_directions: dirs.len(),
        },
        w: dirs.iter().flat_map(|d| d.w.iter().copied()).collect(),
        r: dirs.iter().flat_map(|d| d.r.iter().copied()).collect(),
        b: dirs.iter().flat_map(|d| d.b.iter().copied()).collect(),
    })
}

/// A stack from a chain of ONNX nodes of operator `op`, one per layer, each `(dims, tensors)`
/// with `num_directions` 1 (forward) or 2 (bidirectional) for all of them; layer `k >= 1`
/// must read `num_directions * H` inputs. Errors as [`from_onnx`] and [`Stack::new`].
pub fn stack_from_onnx<F: Float>(
    op: OnnxOp,
    nodes: &[(OnnxDims, OnnxTensors<'_, F>)],
) -> Result<Stack<F>> {
    let nd = nodes.first().map_or(1, |(d, _)| d.num_directions);
    let directions = match nd {
        1 => Directions::Forward,
        2 => Directions::Both,
        _ => {
            return Err(Error::InvalidArgument {
                what: "num_directions",
                why: format!("must be 1 or 2, got {nd}"),
            });
        }
    };
    let mut layers = Vec::new();
    for (k, (dims, t)) in nodes.iter().enumerate() {
        if dims.num_directions != nd {
            return Err(Error::InvalidArgument {
                what: "num_directions",
                why: format!("node {k} has {}, node 0 {nd}", dims.num_directions),
            });
        }
        for dir in directions.iter() {
            layers.push(from_onnx(op, *dims, *t, dir)?);
        }
    }
    Stack::new(layers, nodes.len(), directions)
}

/// Builds our layer equivalent to `direction` of an ONNX operator `op` with tensors `t` of
/// extents `dims`. Every length is checked ([`Error::BufferLength`]), as are `direction`
/// against `num_directions` and the peepholes ([`Error::InvalidArgument`]).
pub fn from_onnx<F: Float>(
    op: OnnxOp,
    dims: OnnxDims,
    t: OnnxTensors<'_, F>,
    direction: Direction,
) -> Result<Layer<F>> {
    let nd = dims.num_directions;
    if !(1..=2).contains(&nd) {
        return Err(Error::InvalidArgument {
            what: "num_directions",
            why: format!("must be 1 or 2, got {nd}"),
        });
    }
    let d = direction.index();
    if d >= nd {
        return Err(Error::InvalidArgument {
            what: "direction",
            why: format!("{direction:?} (index {d}) needs num_directions = 2, got {nd}"),
        });
    }
    let cell = op.cell();
    let (i, h) = (dims.input_size, dims.hidden_size);
    let gh = mul_len("W [num_directions, G*H, I]", cell.gates(), h)?;
    let w_len = mul_len("W [num_directions, G*H, I]", gh, i)?;
    let r_len = mul_len("R [num_directions, G*H, H]", gh, h)?;
    let b_len = mul_len("B [num_directions, 2*G*H]", gh, 2)?;
    check_len(
        "W [num_directions, G*H, I]",
        t.w,
        mul_len("W [num_directions, G*H, I]", w_len, nd)?,
    )?;
    check_len(
        "R [num_directions, G*H, H]",
        t.r,
        mul_len("R [num_directions, G*H, H]", r_len, nd)?,
    )?;
    if let Some(b) = t.b {
        check_len(
            "B [num_directions, 2*G*H]",
            b,
            mul_len("B [num_directions, 2*G*H]", b_len, nd)?,
        )?;
    }
    if let (OnnxOp::Lstm, Some(p)) = (op, t.p) {
        let p_len = mul_len("P [num_directions, 3*H]", h, 3)?;
        check_len(
            "P [num_directions, 3*H]",
            p,
            mul_len("P [num_directions, 3*H]", p_len, nd)?,
        )?;
        if p.iter().any(|v| *v != F::ZERO) {
            return Err(Error::InvalidArgument {
                what: "P",
                why: "LSTM peepholes are not supported; only an absent or all-zero P converts"
                    .into(),
            });
        }
    }
    let map = block_map(cell);
    let mut weight_ih = vec![F::ZERO; w_len];
    let mut weight_hh = vec![F::ZERO; r_len];
    let mut bias_ih = vec![F::ZERO; gh];
    let mut bias_hh = vec![F::ZERO; gh];
    permute(
        map,
        h * i,
        &t.w[d * w_len..(d + 1) * w_len],
        &mut weight_ih,
        false,
    );
    permute(
        map,
        h * h,
        &t.r[d * r_len..(d + 1) * r_len],
        &mut weight_hh,
        false,
    );
    if let Some(b) = t.b {
        let b = &b[d * b_len..(d + 1) * b_len];
        permute(map, h, &b[..gh], &mut bias_ih, false);
        permute(map, h, &b[gh..], &mut bias_hh, false);
    }
    Layer::new(
        cell,
        i,
        h,
        LayerWeights {
            weight_ih: &weight_ih,
            weight_hh: &weight_hh,
            bias_ih: &bias_ih,
            bias_hh: &bias_hh,
        },
    )
}
