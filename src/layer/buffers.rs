//! The buffers of a call (initial and final state, upstream gradients, input gradients) and
//! their validation against a call's dimensions.

use crate::error::{Error, Result, check_len, check_opt_len};
use crate::float::Float;
use crate::layer::Layer;
use crate::shape::Dims;
use crate::weights::LayerGrads;

/// Initial state of a forward pass. `None` means zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitialState<'a, F> {
    /// `h_0 [B, H]`.
    pub h0: Option<&'a [F]>,
    /// `c_0 [B, H]` (LSTM only).
    pub c0: Option<&'a [F]>,
}

/// Where a forward pass writes the final state, if wanted.
#[derive(Debug, Default)]
pub struct FinalState<'a, F> {
    /// `h_T [B, H]`.
    pub h_n: Option<&'a mut [F]>,
    /// `c_T [B, H]` (LSTM only).
    pub c_n: Option<&'a mut [F]>,
}

/// Gradients arriving from above for a backward pass. `None` means zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a, F> {
    /// `dL/dy [T, B, H]`.
    pub dy: Option<&'a [F]>,
    /// `dL/dh_T [B, H]`.
    pub dh_n: Option<&'a [F]>,
    /// `dL/dc_T [B, H]` (LSTM only).
    pub dc_n: Option<&'a [F]>,
}

/// Where a backward pass writes the gradients of its inputs, if wanted (always overwritten).
#[derive(Debug, Default)]
pub struct InputGrads<'a, F> {
    /// `dL/dx [T, B, I]`.
    pub dx: Option<&'a mut [F]>,
    /// `dL/dh_0 [B, H]`.
    pub dh0: Option<&'a mut [F]>,
    /// `dL/dc_0 [B, H]` (LSTM only).
    pub dc0: Option<&'a mut [F]>,
}

impl<F: Float> Layer<F> {
    /// Checks the buffers of a forward over `d.seq_len` steps of `d.batch` rows: every length,
    /// then no cell state for a cell without one.
    pub(crate) fn check_forward_buffers(
        &self,
        d: &Dims,
        x: &[F],
        init: &InitialState<'_, F>,
        y: &[F],
        fin: &FinalState<'_, F>,
    ) -> Result<()> {
        check_len("x [T, B, I]", x, d.x_len())?;
        check_len("y [T, B, H]", y, d.y_len())?;
        check_opt_len("h0 [B, H]", init.h0, d.state_len())?;
        check_opt_len("c0 [B, H]", init.c0, d.state_len())?;
        check_opt_len("h_n [B, H]", fin.h_n.as_deref(), d.state_len())?;
        check_opt_len("c_n [B, H]", fin.c_n.as_deref(), d.state_len())?;
        self.check_lstm_only("c0", init.c0)?;
        self.check_lstm_only("c_n", fin.c_n.as_ref())
    }

    /// Checks the buffers of a backward over `d.seq_len` steps of `d.batch` rows, as
    /// [`Layer::check_forward_buffers`], then the weight gradients' lengths.
    pub(crate) fn check_backward_buffers(
        &self,
        d: &Dims,
        x: &[F],
        up: &Upstream<'_, F>,
        grads: &LayerGrads<F>,
        inputs: &InputGrads<'_, F>,
    ) -> Result<()> {
        let gh = self.cell.gates() * d.hidden;
        check_len("x [T, B, I]", x, d.x_len())?;
        check_opt_len("dy [T, B, H]", up.dy, d.y_len())?;
        check_opt_len("dh_n [B, H]", up.dh_n, d.state_len())?;
        check_opt_len("dc_n [B, H]", up.dc_n, d.state_len())?;
        check_opt_len("dx [T, B, I]", inputs.dx.as_deref(), d.x_len())?;
        check_opt_len("dh0 [B, H]", inputs.dh0.as_deref(), d.state_len())?;
        check_opt_len("dc0 [B, H]", inputs.dc0.as_deref(), d.state_len())?;
        self.check_lstm_only("dc_n", up.dc_n)?;
        self.check_lstm_only("dc0", inputs.dc0.as_ref())?;
        check_len("grads.weight_ih [G*H, I]", &grads.weight_ih, gh * d.input)?;
        check_len("grads.weight_hh [G*H, H]", &grads.weight_hh, gh * d.hidden)?;
        check_len("grads.bias_ih [G*H]", &grads.bias_ih, gh)?;
        check_len("grads.bias_hh [G*H]", &grads.bias_hh, gh)
    }

    fn check_lstm_only<T>(&self, what: &'static str, buf: Option<T>) -> Result<()> {
        if buf.is_some() && !self.cell.has_cell_state() {
            return Err(Error::UnexpectedBuffer {
                what,
                why: "only the LSTM has a cell state",
            });
        }
        Ok(())
    }
}
