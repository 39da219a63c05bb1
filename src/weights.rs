//! Layer parameters in PyTorch's layout, and their gradients.
//!
//! `weight_ih [G*H, I]`, `weight_hh [G*H, H]`, `bias_ih [G*H]`, `bias_hh [G*H]`, row-major, gate
//! blocks of `H` rows stacked in the order LSTM `i, f, g, o`, GRU `r, z, n` (RNN: one block).
//! These are PyTorch's `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`.

use crate::error::{Result, check_len, mul_len, try_zeroed};
use crate::float::Float;
use crate::shape::{CellKind, Dims};

/// Borrowed view of one layer's parameters in PyTorch's layout.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a, F> {
    /// `[G*H, I]`, row-major.
    pub weight_ih: &'a [F],
    /// `[G*H, H]`, row-major.
    pub weight_hh: &'a [F],
    /// `[G*H]`.
    pub bias_ih: &'a [F],
    /// `[G*H]`.
    pub bias_hh: &'a [F],
}

impl<F> LayerWeights<'_, F> {
    /// Checks every length against `cell` and the `input`/`hidden` widths of `dims`.
    pub fn validate(&self, cell: CellKind, dims: &Dims) -> Result<()> {
        dims.validate(cell)?;
        let gh = cell.gates() * dims.hidden;
        check_len("weight_ih [G*H, I]", self.weight_ih, gh * dims.input)?;
        check_len("weight_hh [G*H, H]", self.weight_hh, gh * dims.hidden)?;
        check_len("bias_ih [G*H]", self.bias_ih, gh)?;
        check_len("bias_hh [G*H]", self.bias_hh, gh)?;
        Ok(())
    }
}

/// Gradients of one layer's parameters, owned, in the same layout as [`LayerWeights`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGrads<F> {
    /// `dL/d weight_ih`, `[G*H, I]`.
    pub weight_ih: Vec<F>,
    /// `dL/d weight_hh`, `[G*H, H]`.
    pub weight_hh: Vec<F>,
    /// `dL/d bias_ih`, `[G*H]`.
    pub bias_ih: Vec<F>,
    /// `dL/d bias_hh`, `[G*H]`.
    pub bias_hh: Vec<F>,
}

impl<F: Float> LayerGrads<F> {
    /// Zero gradients for a layer of `cell` with `input` features and `hidden` units;
    /// [`Error::SizeOverflow`] or [`Error::AllocationFailed`] where they cannot be had.
    ///
    /// [`Error::SizeOverflow`]: crate::Error::SizeOverflow
    /// [`Error::AllocationFailed`]: crate::Error::AllocationFailed
    pub fn zeros(cell: CellKind, input: usize, hidden: usize) -> Result<Self> {
        let gh = mul_len("gradient [G*H]", cell.gates(), hidden)?;
        Ok(LayerGrads {
            weight_ih: try_zeroed("weight_ih gradient", mul_len("weight_ih", gh, input)?)?,
            weight_hh: try_zeroed("weight_hh gradient", mul_len("weight_hh", gh, hidden)?)?,
            bias_ih: try_zeroed("bias_ih gradient", gh)?,
            bias_hh: try_zeroed("bias_hh gradient", gh)?,
        })
    }

    /// Views the gradients as a [`LayerWeights`] (same shapes).
    pub fn as_weights(&self) -> LayerWeights<'_, F> {
        LayerWeights {
            weight_ih: &self.weight_ih,
            weight_hh: &self.weight_hh,
            bias_ih: &self.bias_ih,
            bias_hh: &self.bias_hh,
        }
    }

    /// Sets every gradient to zero.
    pub fn fill_zero(&mut self) {
        for v in [
            &mut self.weight_ih,
            &mut self.weight_hh,
            &mut self.bias_ih,
            &mut self.bias_hh,
        ] {
            v.fill(F::ZERO);
        }
    }
}
