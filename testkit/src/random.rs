//! Seeded randomness (rule of thumb 10) and the case every oracle comparison runs on.

use fused_rnn::{CellKind, Dims, Float, InitialState, LayerWeights, Upstream};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded random number generator (deterministic across runs and platforms).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values drawn from U(lo, hi) in f64 and rounded to `F`.
pub fn uniform<F: Float>(rng: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<F> {
    (0..n)
        .map(|_| F::from_f64(rng.random_range(lo..hi)))
        .collect()
}

/// A small deterministic generator (SplitMix64), so that big tensors cost a fuzz target 8
/// bytes of seed instead of thousands of bytes of input.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), on a 2^-24 grid (exact in f32).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 40) as f64) / (1u64 << 23) as f64 - 1.0
    }
}

/// Shorthand for [`Dims`].
pub fn dims(seq_len: usize, batch: usize, input: usize, hidden: usize) -> Dims {
    Dims {
        seq_len,
        batch,
        input,
        hidden,
    }
}

/// A layer's parameters with its inputs and upstream gradients: one forward + backward
/// problem. [`RandomCase::new`] draws one from a seed; the fields are public, so a fuzz target
/// fills them from its own input, leaving optional inputs out (`None`: zeros, as the API
/// reads an absent buffer).
///
/// Drawn by `new`: weights and biases are U(-k, k) with `k = min(1, 2/sqrt(H))`, twice
/// PyTorch's default bound `1/sqrt(H)` (the PyTorch fixtures use the same), so that the gates
/// spread over (0, 1) instead of all sitting near 0.5. `x`, `dy`, `dh_n`, `dc_n` are U(-1, 1);
/// `h0` is U(-0.5, 0.5), `c0` U(-1, 1). Every input is `Some`, but `c0` and `dc_n` only for the
/// LSTM.
#[derive(Debug, Clone)]
pub struct RandomCase<F> {
    /// The cell kind.
    pub cell: CellKind,
    /// The dimensions.
    pub dims: Dims,
    /// `[G*H, I]`.
    pub weight_ih: Vec<F>,
    /// `[G*H, H]`.
    pub weight_hh: Vec<F>,
    /// `[G*H]`.
    pub bias_ih: Vec<F>,
    /// `[G*H]`.
    pub bias_hh: Vec<F>,
    /// `[T, B, I]`.
    pub x: Vec<F>,
    /// `[B, H]`.
    pub h0: Option<Vec<F>>,
    /// `[B, H]`, LSTM only.
    pub c0: Option<Vec<F>>,
    /// `[T, B, H]`.
    pub dy: Option<Vec<F>>,
    /// `[B, H]`.
    pub dh_n: Option<Vec<F>>,
    /// `[B, H]`, LSTM only.
    pub dc_n: Option<Vec<F>>,
}

impl<F: Float> RandomCase<F> {
    /// Draws a case from `seed`.
    pub fn new(cell: CellKind, dims: Dims, seed: u64) -> Self {
        let mut r = rng(seed);
        let gh = cell.gates() * dims.hidden;
        let k = (2.0 / (dims.hidden as f64).sqrt()).min(1.0);
        let s = dims.state_len();
        let lstm = cell.has_cell_state();
        let weight_ih = uniform(&mut r, gh * dims.input, -k, k);
        let weight_hh = uniform(&mut r, gh * dims.hidden, -k, k);
        let bias_ih = uniform(&mut r, gh, -k, k);
        let bias_hh = uniform(&mut r, gh, -k, k);
        let x = uniform(&mut r, dims.x_len(), -1.0, 1.0);
        let h0 = Some(uniform(&mut r, s, -0.5, 0.5));
        let c0 = lstm.then(|| uniform(&mut r, s, -1.0, 1.0));
        let dy = Some(uniform(&mut r, dims.y_len(), -1.0, 1.0));
        let dh_n = Some(uniform(&mut r, s, -1.0, 1.0));
        let dc_n = lstm.then(|| uniform(&mut r, s, -1.0, 1.0));
        RandomCase {
            cell,
            dims,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            x,
            h0,
            c0,
            dy,
            dh_n,
            dc_n,
        }
    }

    /// The layer's parameters as a view.
    pub fn weights(&self) -> LayerWeights<'_, F> {
        LayerWeights {
            weight_ih: &self.weight_ih,
            weight_hh: &self.weight_hh,
            bias_ih: &self.bias_ih,
            bias_hh: &self.bias_hh,
        }
    }

    /// `h0` as an optional slice.
    pub fn h0(&self) -> Option<&[F]> {
        self.h0.as_deref()
    }

    /// `c0` as an optional slice.
    pub fn c0(&self) -> Option<&[F]> {
        self.c0.as_deref()
    }

    /// `dy` as an optional slice.
    pub fn dy(&self) -> Option<&[F]> {
        self.dy.as_deref()
    }

    /// `dh_n` as an optional slice.
    pub fn dh_n(&self) -> Option<&[F]> {
        self.dh_n.as_deref()
    }

    /// `dc_n` as an optional slice.
    pub fn dc_n(&self) -> Option<&[F]> {
        self.dc_n.as_deref()
    }

    /// `(h0, c0)` as the layer takes them.
    pub fn init(&self) -> InitialState<'_, F> {
        InitialState {
            h0: self.h0(),
            c0: self.c0(),
        }
    }

    /// `(dy, dh_n, dc_n)` as the layer takes them.
    pub fn upstream(&self) -> Upstream<'_, F> {
        Upstream {
            dy: self.dy(),
            dh_n: self.dh_n(),
            dc_n: self.dc_n(),
        }
    }

    /// The same case in another precision (exact when widening f32 to f64, and when rounding
    /// values drawn on the f32 grid to f32).
    pub fn cast<G: Float>(&self) -> RandomCase<G> {
        fn conv<F: Float, G: Float>(v: &[F]) -> Vec<G> {
            v.iter().map(|&a| G::from_f64(a.to_f64())).collect()
        }
        RandomCase {
            cell: self.cell,
            dims: self.dims,
            weight_ih: conv(&self.weight_ih),
            weight_hh: conv(&self.weight_hh),
            bias_ih: conv(&self.bias_ih),
            bias_hh: conv(&self.bias_hh),
            x: conv(&self.x),
            h0: self.h0().map(conv),
            c0: self.c0().map(conv),
            dy: self.dy().map(conv),
            dh_n: self.dh_n().map(conv),
            dc_n: self.dc_n().map(conv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fused_rnn::GruVariant;

    #[test]
    fn split_mix_units_are_f32_values_in_range() {
        let mut r = SplitMix(7);
        for _ in 0..1000 {
            let v = r.unit();
            assert!((-1.0..1.0).contains(&v));
            assert_eq!(f64::from(v as f32), v);
        }
    }

    #[test]
    fn a_case_is_its_seed_and_casts_exactly() {
        let cell = CellKind::Lstm;
        let d = dims(3, 2, 4, 5);
        let a = RandomCase::<f32>::new(cell, d, 11);
        let b = RandomCase::<f32>::new(cell, d, 11);
        assert_eq!(a.x, b.x);
        assert_eq!(a.cast::<f64>().cast::<f32>().weight_hh, a.weight_hh);
        assert!(a.c0.is_some() && a.dc_n.is_some());
        let gru = RandomCase::<f64>::new(CellKind::Gru(GruVariant::ResetAfter), d, 11);
        assert!(gru.c0.is_none() && gru.dc_n.is_none() && gru.h0.is_some());
    }
}
