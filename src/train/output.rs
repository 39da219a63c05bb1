//! The output layer `y_t = W_hy h_t + b_y`, applied to any number of rows of hidden states
//! (one row per sequence for many-to-one, `T·B` rows for many-to-many).

use crate::error::{Error, Result, check_len, check_opt_len, mul_len, try_to_vec, try_zeroed};
use crate::float::Float;
use crate::kernels::strided_gemm::{MatMut, MatRef, gemm};
use crate::shape::GradMode;

/// A dense output layer: `weight [O, H]` (PyTorch `nn.Linear` layout), `bias [O]`.
#[derive(Debug, Clone)]
pub struct OutputLayer<F> {
    outputs: usize,
    hidden: usize,
    weight: Vec<F>,
    bias: Vec<F>,
}

/// Gradients of an [`OutputLayer`]'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputGrads<F> {
    /// `dL/dW_hy [O, H]`.
    pub weight: Vec<F>,
    /// `dL/db_y [O]`.
    pub bias: Vec<F>,
}

impl<F: Float> OutputLayer<F> {
    /// An output layer from `weight [O, H]` and `bias [O]` (copied).
    ///
    /// # Errors
    ///
    /// [`Error::ZeroDim`] for `O` or `H` zero, [`Error::SizeOverflow`] if `O·H` overflows,
    /// [`Error::BufferLength`] for a buffer of the wrong length, [`Error::AllocationFailed`]
    /// if the copies cannot be allocated.
    pub fn new(outputs: usize, hidden: usize, weight: &[F], bias: &[F]) -> Result<Self> {
        let len = Self::check_dims(outputs, hidden)?;
        check_len("weight [O, H]", weight, len)?;
        check_len("bias [O]", bias, outputs)?;
        Ok(OutputLayer {
            outputs,
            hidden,
            weight: try_to_vec("weight [O, H]", weight)?,
            bias: try_to_vec("bias [O]", bias)?,
        })
    }

    /// Initialised like PyTorch's `nn.Linear`: `U(-1/sqrt(H), 1/sqrt(H))`, seeded.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroDim`] for `O` or `H` zero, [`Error::SizeOverflow`] if the weights' size in
    /// bytes overflows `isize`, [`Error::AllocationFailed`] if the allocator refuses them.
    pub fn with_seeded_init(outputs: usize, hidden: usize, seed: u64) -> Result<Self> {
        use rand::{RngExt, SeedableRng};
        let len = Self::check_dims(outputs, hidden)?;
        // Both allocated before any is written: a refused bias leaves no weights touched.
        let mut weight = try_zeroed("weight [O, H]", len)?;
        let mut bias = try_zeroed("bias [O]", outputs)?;
        let k = 1.0 / (hidden as f64).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for v in weight.iter_mut().chain(bias.iter_mut()) {
            *v = F::from_f64(rng.random_range(-k..k));
        }
        Ok(OutputLayer {
            outputs,
            hidden,
            weight,
            bias,
        })
    }

    /// Checks `O` and `H`; returns the weights' length `O·H`.
    fn check_dims(outputs: usize, hidden: usize) -> Result<usize> {
        if outputs == 0 {
            return Err(Error::ZeroDim { what: "outputs" });
        }
        if hidden == 0 {
            return Err(Error::ZeroDim { what: "hidden" });
        }
        mul_len("weight [O, H]", outputs, hidden)
    }

    /// Output width `O`.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
    /// Input (hidden) width `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }
    /// `weight [O, H]`.
    pub fn weight(&self) -> &[F] {
        &self.weight
    }
    /// `bias [O]`.
    pub fn bias(&self) -> &[F] {
        &self.bias
    }
    /// Mutable `(weight, bias)`, e.g. for an optimiser step.
    pub fn params_mut(&mut self) -> (&mut [F], &mut [F]) {
        (&mut self.weight, &mut self.bias)
    }
    /// Zero gradients shaped like the parameters.
    ///
    /// # Errors
    ///
    /// [`Error::AllocationFailed`] if they cannot be allocated (they are as large as the
    /// parameters).
    pub fn zero_grads(&self) -> Result<OutputGrads<F>> {
        Ok(OutputGrads {
            weight: try_zeroed("output weight gradient", self.weight.len())?,
            bias: try_zeroed("output bias gradient", self.bias.len())?,
        })
    }

    /// Rows in `h`, which must be a whole number of `[H]` rows (at least one).
    fn rows(&self, h: &[F]) -> Result<usize> {
        if h.is_empty() || !h.len().is_multiple_of(self.hidden) {
            return Err(Error::BufferLength {
                what: "h [N, H] (a positive multiple of H)",
                expected: self.hidden * (h.len() / self.hidden).max(1),
                got: h.len(),
            });
        }
        Ok(h.len() / self.hidden)
    }

    /// `y [N, O] = h [N, H] · W_hyᵀ + b_y`.
    pub fn forward(&self, h: &[F], y: &mut [F]) -> Result<()> {
        let n = self.rows(h)?;
        check_len("y [N, O]", y, mul_len("y [N, O]", n, self.outputs)?)?;
        for row in y.chunks_exact_mut(self.outputs) {
            row.copy_from_slice(&self.bias);
        }
        gemm(
            F::ONE,
            MatRef::rows(h, n, self.hidden, self.hidden),
            MatRef::rows(&self.weight, self.outputs, self.hidden, self.hidden).t(),
            F::ONE,
            MatMut::rows(y, n, self.outputs, self.outputs),
        );
        Ok(())
    }

    /// Gradients for upstream `dy [N, O]`: parameter gradients into `grads` (by `mode`) and, if
    /// given, `dh [N, H] = dy · W_hy` (overwritten).
    pub fn backward(
        &self,
        h: &[F],
        dy: &[F],
        grads: &mut OutputGrads<F>,
        dh: Option<&mut [F]>,
        mode: GradMode,
    ) -> Result<()> {
        let n = self.rows(h)?;
        check_len("dy [N, O]", dy, mul_len("dy [N, O]", n, self.outputs)?)?;
        check_opt_len("dh [N, H]", dh.as_deref(), h.len())?;
        check_len("grads.weight [O, H]", &grads.weight, self.weight.len())?;
        check_len("grads.bias [O]", &grads.bias, self.outputs)?;
        let beta = match mode {
            GradMode::Overwrite => F::ZERO,
            GradMode::Accumulate => F::ONE,
        };
        let dy_m = MatRef::rows(dy, n, self.outputs, self.outputs);
        gemm(
            F::ONE,
            dy_m.t(),
            MatRef::rows(h, n, self.hidden, self.hidden),
            beta,
            MatMut::rows(&mut grads.weight, self.outputs, self.hidden, self.hidden),
        );
        if mode == GradMode::Overwrite {
            grads.bias.fill(F::ZERO);
        }
        for row in dy.chunks_exact(self.outputs) {
            for (g, v) in grads.bias.iter_mut().zip(row) {
                *g += *v;
            }
        }
        if let Some(dh) = dh {
            gemm(
                F::ONE,
                dy_m,
                MatRef::rows(&self.weight, self.outputs, self.hidden, self.hidden),
                F::ZERO,
                MatMut::rows(dh, n, self.hidden, self.hidden),
            );
        }
        Ok(())
    }
}
