//! Stacks of layers, as PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` with `num_layers` and
//! `bidirectional`: a grid of `(layer, direction)` passes over time (oneDNN's loop over
//! layers, directions and steps), each an ordinary [`Layer`] pass.
//!
//! Layouts are PyTorch's: `x [T, B, I]`; `y [T, B, D·H]` with the forward direction's half
//! first; states `h0`, `c0`, `h_n`, `c_n` and their gradients `[L·D, B, H]`, slice
//! `layer·D + direction`; layer `k >= 1` reads the `D·H` outputs of layer `k - 1`. Over a padded
//! batch ([`Batch::Padded`](crate::Batch::Padded)) the reverse direction of every layer starts at each row's own last
//! valid step, as PyTorch's packed sequences do, and `y` is zero past a row's length.
//!
//! Dropout between layers is PyTorch's: in training ([`Mode::Training`] workspaces) with
//! probability `p` ([`Stack::set_dropout`]), each element of layer `k`'s output is zeroed
//! before layer `k + 1` reads it, and the others scaled by `1 / (1 - p)` (inverted dropout;
//! none after the last layer); inference runs without it. The masks come from a generator
//! seeded by the workspace ([`StackWorkspace::reseed`]), one mask per training forward, and
//! backward applies the same mask to the gradient. With `p = 0` nothing is drawn and the
//! results are bit for bit those of a stack without dropout.

mod halves;
mod stream;
mod workspace;

pub use stream::StreamingStack;
pub use workspace::StackWorkspace;

use halves::{pair_of_states, put_half, take_half};
use workspace::draw_mask;

use std::sync::Arc;

use crate::error::{Error, Result, check_len, check_opt_len, mul_len};
use crate::exec::pool::JoinedPool;
use crate::float::Float;
use crate::layer::{FinalState, InitialState, InputGrads, Layer, Upstream};
use crate::shape::{CellKind, Direction, GradMode, Mode};
use crate::weights::LayerGrads;
use crate::workspace::Workspace;

/// One direction or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Directions {
    /// Forward only (`D = 1`; PyTorch `bidirectional=False`).
    Forward,
    /// Forward and reverse (`D = 2`; PyTorch `bidirectional=True`).
    Both,
}

impl Directions {
    /// `D`: 1 or 2.
    pub const fn count(self) -> usize {
        match self {
            Directions::Forward => 1,
            Directions::Both => 2,
        }
    }

    /// The directions, forward first.
    pub fn iter(self) -> impl Iterator<Item = Direction> {
        Direction::BOTH.into_iter().take(self.count())
    }
}

/// `L` layers of `D` directions; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Stack<F> {
    cell: CellKind,
    input: usize,
    hidden: usize,
    num_layers: usize,
    directions: Directions,
    /// `layer·D + direction`.
    layers: Vec<Layer<F>>,
    /// Dropout probability between layers (training only).
    dropout: f64,
    /// The seed of the dropout masks of the workspaces made from now on.
    dropout_seed: u64,
    /// Two threads that run a bidirectional layer's directions at once (`None`: one after
    /// the other). See [`Stack::set_threads`].
    pool: Option<Arc<JoinedPool>>,
}

/// The weight gradients of a stack, one [`LayerGrads`] per `(layer, direction)`, indexed
/// `layer·D + direction`.
#[derive(Debug, Clone)]
pub struct StackGrads<F> {
    /// `layer·D + direction`.
    pub layers: Vec<LayerGrads<F>>,
}

impl<F: Float> Stack<F> {
    /// A stack from its layers, `layer·D + direction` (`L·D` of them): every layer of `cell`
    /// with `hidden` units, layer 0 reading `input` features and the others `D·hidden`.
    pub fn new(layers: Vec<Layer<F>>, num_layers: usize, directions: Directions) -> Result<Self> {
        let d = directions.count();
        if num_layers == 0 {
            return Err(Error::ZeroDim { what: "num_layers" });
        }
        if layers.len() != num_layers * d {
            return Err(Error::InvalidArgument {
                what: "layers",
                why: format!(
                    "{} layers for {num_layers} layers of {d} directions",
                    layers.len()
                ),
            });
        }
        let (cell, input, hidden) = (
            layers[0].cell(),
            layers[0].input_size(),
            layers[0].hidden_size(),
        );
        for (n, l) in layers.iter().enumerate() {
            let want_input = if n < d { input } else { d * hidden };
            if l.cell() != cell || l.hidden_size() != hidden || l.input_size() != want_input {
                return Err(Error::InvalidArgument {
                    what: "layers",
                    why: format!(
                        "layer {} direction {}: {} with input {}, hidden {}; the stack needs {} with input {want_input}, hidden {hidden}",
                        n / d,
                        n % d,
                        l.cell().name(),
                        l.input_size(),
                        l.hidden_size(),
                        cell.name()
                    ),
                });
            }
        }
        Ok(Stack {
            cell,
            input,
            hidden,
            num_layers,
            directions,
            layers,
            dropout: 0.0,
            dropout_seed: 0,
            pool: None,
        })
    }

    /// A stack initialised as PyTorch does (every parameter from `U(-1/sqrt(H), 1/sqrt(H))`),
    /// layer `(k, d)` from the seed `seed + k·D + d`.
    pub fn with_seeded_init(
        cell: CellKind,
        input: usize,
        hidden: usize,
        num_layers: usize,
        directions: Directions,
        seed: u64,
    ) -> Result<Self> {
        let d = directions.count();
        let layers = (0..num_layers * d)
            .map(|n| {
                let i = if n < d {
                    input
                } else {
                    mul_len("stack input", d, hidden)?
                };
                Layer::with_seeded_init(cell, i, hidden, seed.wrapping_add(n as u64))
            })
            .collect::<Result<Vec<_>>>()?;
        Stack::new(layers, num_layers, directions)
    }

    /// The cell kind.
    pub fn cell(&self) -> CellKind {
        self.cell
    }
    /// Input features `I` of layer 0.
    pub fn input_size(&self) -> usize {
        self.input
    }
    /// Hidden units `H` of every layer.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }
    /// `L`.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }
    /// One direction or both.
    pub fn directions(&self) -> Directions {
        self.directions
    }
    /// Width of `y`: `D·H`.
    pub fn output_size(&self) -> usize {
        self.directions.count() * self.hidden
    }
    /// What a workspace must have been made for: cell, input, hidden, layers, directions.
    fn shape(&self) -> (CellKind, usize, usize, usize, Directions) {
        (
            self.cell,
            self.input,
            self.hidden,
            self.num_layers,
            self.directions,
        )
    }

    /// [`Error::WorkspaceMismatch`] unless `ws` was made by a stack of this shape (checked
    /// before any layer runs: a layer's own check would come after the layers before it ran).
    fn check_serves(&self, ws: &StackWorkspace<F>) -> Result<()> {
        if ws.shape == self.shape() {
            return Ok(());
        }
        let show = |(c, i, h, l, d): (CellKind, usize, usize, usize, Directions)| {
            format!(
                "{} stack with input {i}, hidden {h}, {l} layers, {d:?}",
                c.name()
            )
        };
        Err(Error::WorkspaceMismatch {
            expected: show(self.shape()),
            got: show(ws.shape),
        })
    }

    /// The layer of `(layer, direction)`.
    pub fn layer(&self, layer: usize, direction: Direction) -> Option<&Layer<F>> {
        self.layers.get(self.index(layer, direction)?)
    }
    /// The layer of `(layer, direction)`, mutable (its weights, threads, ISA).
    pub fn layer_mut(&mut self, layer: usize, direction: Direction) -> Option<&mut Layer<F>> {
        let n = self.index(layer, direction)?;
        self.layers.get_mut(n)
    }
    /// Every `(layer, direction, layer)`, in `layer·D + direction` order.
    pub fn layers(&self) -> impl Iterator<Item = (usize, Direction, &Layer<F>)> {
        let d = self.directions.count();
        self.layers
            .iter()
            .enumerate()
            .map(move |(n, l)| (n / d, Direction::BOTH[n % d], l))
    }

    fn index(&self, layer: usize, direction: Direction) -> Option<usize> {
        let d = self.directions.count();
        (layer < self.num_layers && direction.index() < d).then(|| layer * d + direction.index())
    }

    /// Sets the dropout probability between layers (PyTorch's `dropout`, `0 <= p <= 1`;
    /// training only) and the seed of the masks of workspaces made from now on. A training
    /// workspace made for another `p` has no room for, or other, masks: [`Stack::forward`]
    /// then returns [`Error::WorkspaceMismatch`].
    pub fn set_dropout(&mut self, p: f64, seed: u64) -> Result<()> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument {
                what: "dropout",
                why: format!("{p} is not a probability in [0, 1]"),
            });
        }
        self.dropout = p;
        self.dropout_seed = seed;
        Ok(())
    }

    /// The dropout probability between layers.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// Runs passes on `n` threads. A bidirectional stack on 2 or more threads runs each
    /// layer's two directions at once, each on half of them (its layers get `n / 2` threads;
    /// oneDNN, PyTorch and ONNX Runtime run the directions one after the other); otherwise
    /// every layer gets `n` (see [`Layer::set_threads`]). Every element is computed as on one
    /// thread, whatever `n`: results are bit for bit the same.
    pub fn set_threads(&mut self, n: usize) -> Result<()> {
        crate::exec::pool::check_threads(n)?;
        let both = self.directions == Directions::Both && n >= 2;
        let per_layer = if both { n / 2 } else { n };
        self.layers
            .iter_mut()
            .try_for_each(|l| l.set_threads(per_layer))?;
        self.pool = if both {
            let pool = JoinedPool::new(2).map_err(|e| Error::InvalidArgument {
                what: "threads",
                why: format!("could not start the directions' two threads: {e}"),
            })?;
            pool.broadcast(|_| ());
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(())
    }

    /// Threads a pass uses.
    pub fn threads(&self) -> usize {
        let per_layer = self.layers[0].threads();
        if self.pool.is_some() {
            2 * per_layer
        } else {
            per_layer
        }
    }

    /// Runs `a` and `b`, at once on the directions' threads where the stack has them.
    fn both(
        &self,
        a: impl FnOnce() -> Result<()> + Send,
        b: impl FnOnce() -> Result<()> + Send,
    ) -> Result<()> {
        match &self.pool {
            Some(pool) => {
                let (ra, rb) = pool.install(|| rayon::join(a, b));
                ra.and(rb)
            }
            None => a().and_then(|()| b()),
        }
    }

    /// Zero gradients shaped like the stack's parameters.
    pub fn zero_grads(&self) -> Result<StackGrads<F>> {
        Ok(StackGrads {
            layers: self
                .layers
                .iter()
                .map(Layer::zero_grads)
                .collect::<Result<_>>()?,
        })
    }

    /// Runs the stack over `x [T, B, I]`, writing `y [T, B, D·H]` (the last layer's outputs,
    /// forward half first) and, if asked, the final states `[L·D, B, H]`. Initial states are
    /// `[L·D, B, H]` (`None`: zeros). A [`Mode::Training`] workspace keeps what
    /// [`Stack::backward`] needs.
    pub fn forward(
        &self,
        ws: &mut StackWorkspace<F>,
        x: &[F],
        init: InitialState<'_, F>,
        y: &mut [F],
        mut fin: FinalState<'_, F>,
    ) -> Result<()> {
        self.check_serves(ws)?;
        let (t, b, h) = (ws.seq_len, ws.batch, self.hidden);
        let (l_count, d) = (self.num_layers, self.directions.count());
        let states = l_count * d * b * h;
        check_len("x [T, B, I]", x, t * b * self.input)?;
        check_len("y [T, B, D*H]", y, t * b * d * h)?;
        check_opt_len("h0 [L*D, B, H]", init.h0, states)?;
        check_opt_len("c0 [L*D, B, H]", init.c0, states)?;
        check_opt_len("h_n [L*D, B, H]", fin.h_n.as_deref(), states)?;
        check_opt_len("c_n [L*D, B, H]", fin.c_n.as_deref(), states)?;
        let lstm = self.cell.has_cell_state();
        if !lstm && (init.c0.is_some() || fin.c_n.is_some()) {
            return Err(Error::UnexpectedBuffer {
                what: "c0 / c_n",
                why: "only the LSTM has a cell state",
            });
        }
        let drop = ws.mode == Mode::Training && self.dropout > 0.0 && l_count > 1;
        if drop && ws.dropout != self.dropout {
            return Err(Error::WorkspaceMismatch {
                expected: format!("a workspace made for dropout {}", self.dropout),
                got: format!("one made for dropout {}", ws.dropout),
            });
        }
        let StackWorkspace {
            passes,
            outputs,
            halves: [half_f, half_r],
            masks,
            dropped,
            rng,
            masked,
            ..
        } = ws;
        *masked = false;
        let slice = |n: usize| n * b * h..(n + 1) * b * h;
        for k in 0..l_count {
            // Layer k reads x or the previous layer's output, and writes the next layer's input
            // or the caller's y.
            let split = k.min(outputs.len());
            let (before, rest) = outputs.split_at_mut(split);
            let input: &[F] = match k {
                0 => x,
                _ if drop => {
                    draw_mask(rng, self.dropout, &mut masks[k - 1]);
                    let (out, mask) = (&mut dropped[k - 1], &masks[k - 1]);
                    for ((o, v), m) in out.iter_mut().zip(&before[k - 1]).zip(mask) {
                        *o = *v * *m;
                    }
                    &dropped[k - 1]
                }
                _ => &before[k - 1],
            };
            let out: &mut [F] = if k + 1 < l_count {
                &mut rest[0]
            } else {
                &mut *y
            };
            // One direction's pass: layer `n` into `target`, its final state into `h_n`, `c_n`.
            let pass = |n: usize,
                        dir: Direction,
                        ws: &mut Workspace<F>,
                        target: &mut [F],
                        (h_n, c_n): (Option<&mut [F]>, Option<&mut [F]>)| {
                let init_n = InitialState {
                    h0: init.h0.map(|v| &v[slice(n)]),
                    c0: init.c0.map(|v| &v[slice(n)]),
                };
                self.layers[n].forward(ws, dir, input, init_n, target, FinalState { h_n, c_n })
            };
            let states = pair_of_states(
                fin.h_n.as_deref_mut(),
                fin.c_n.as_deref_mut(),
                k * d,
                b * h,
                d,
            );
            if d == 1 {
                pass(k, Direction::Forward, &mut passes[k], out, states.0)?;
                continue;
            }
            let (pf, pr) = passes[2 * k..2 * k + 2].split_at_mut(1);
            let (sf, sr) = states;
            self.both(
                || pass(2 * k, Direction::Forward, &mut pf[0], half_f, sf),
                || pass(2 * k + 1, Direction::Reverse, &mut pr[0], half_r, sr),
            )?;
            put_half(out, half_f, h, d, 0);
            put_half(out, half_r, h, d, 1);
        }
        *masked = drop;
        Ok(())
    }

    /// BPTT through the stack over the last training [`Stack::forward`] with `ws` (`x` the
    /// input it saw): `dy [T, B, D·H]`, `dh_n`/`dc_n [L·D, B, H]` in `up`; weight gradients to
    /// `grads` by `mode`; `dx [T, B, I]`, `dh0`/`dc0 [L·D, B, H]` to `inputs` (overwritten).
    pub fn backward(
        &self,
        ws: &mut StackWorkspace<F>,
        x: &[F],
        up: Upstream<'_, F>,
        grads: &mut StackGrads<F>,
        mut inputs: InputGrads<'_, F>,
        mode: GradMode,
    ) -> Result<()> {
        self.check_serves(ws)?;
        let (t, b, h) = (ws.seq_len, ws.batch, self.hidden);
        let (l_count, d) = (self.num_layers, self.directions.count());
        let states = l_count * d * b * h;
        if ws.mode != Mode::Training {
            return Err(Error::WorkspaceMismatch {
                expected: "a training stack workspace".into(),
                got: "an inference one".into(),
            });
        }
        check_len("x [T, B, I]", x, t * b * self.input)?;
        check_opt_len("dy [T, B, D*H]", up.dy, t * b * d * h)?;
        check_opt_len("dh_n [L*D, B, H]", up.dh_n, states)?;
        check_opt_len("dc_n [L*D, B, H]", up.dc_n, states)?;
        check_opt_len("dx [T, B, I]", inputs.dx.as_deref(), t * b * self.input)?;
        check_opt_len("dh0 [L*D, B, H]", inputs.dh0.as_deref(), states)?;
        check_opt_len("dc0 [L*D, B, H]", inputs.dc0.as_deref(), states)?;
        if grads.layers.len() != self.layers.len() {
            return Err(Error::InvalidArgument {
                what: "grads",
                why: format!(
                    "{} layers of gradients for {}",
                    grads.layers.len(),
                    self.layers.len()
                ),
            });
        }
        // Everything each layer's backward would refuse, checked before any of them runs, so
        // that a refused call changes nothing (the layers above would otherwise have consumed
        // their forwards and written their gradients).
        let gh = self.cell.gates() * h;
        for (n, (layer, g)) in self.layers.iter().zip(&grads.layers).enumerate() {
            check_len(
                "grads.weight_ih [G*H, I]",
                &g.weight_ih,
                gh * layer.input_size(),
            )?;
            check_len("grads.weight_hh [G*H, H]", &g.weight_hh, gh * h)?;
            check_len("grads.bias_ih [G*H]", &g.bias_ih, gh)?;
            check_len("grads.bias_hh [G*H]", &g.bias_hh, gh)?;
            ws.passes[n].check_pending(layer.version())?;
        }
        if !self.cell.has_cell_state() && (up.dc_n.is_some() || inputs.dc0.is_some()) {
            return Err(Error::UnexpectedBuffer {
                what: "dc_n / dc0",
                why: "only the LSTM has a cell state",
            });
        }
        let StackWorkspace {
            passes,
            outputs,
            halves,
            dx: dx_dirs,
            dy: [dy_cur, dy_next],
            masks,
            dropped,
            masked,
            ..
        } = ws;
        let slice = |n: usize| n * b * h..(n + 1) * b * h;
        let wide = t * b * d * h;
        match up.dy {
            Some(v) => dy_cur[..wide].copy_from_slice(v),
            None => dy_cur[..wide].fill(F::ZERO),
        }
        for k in (0..l_count).rev() {
            let input: &[F] = match k {
                0 => x,
                _ if *masked => &dropped[k - 1],
                _ => &outputs[k - 1],
            };
            let in_w = if k == 0 { self.input } else { d * h };
            // One direction's backward: layer `n` from `dy` (its half of the layer's output
            // gradient), its input gradient into `dx`.
            let pass = |n: usize,
                        ws: &mut Workspace<F>,
                        dy: &[F],
                        g: &mut LayerGrads<F>,
                        dx: &mut [F],
                        (dh0, dc0): (Option<&mut [F]>, Option<&mut [F]>)| {
                let up_n = Upstream {
                    dy: Some(dy),
                    dh_n: up.dh_n.map(|v| &v[slice(n)]),
                    dc_n: up.dc_n.map(|v| &v[slice(n)]),
                };
                let inputs_n = InputGrads {
                    dx: Some(&mut dx[..t * b * in_w]),
                    dh0,
                    dc0,
                };
                self.layers[n].backward(ws, input, up_n, g, inputs_n, mode)
            };
            let states = pair_of_states(
                inputs.dh0.as_deref_mut(),
                inputs.dc0.as_deref_mut(),
                k * d,
                b * h,
                d,
            );
            if d == 1 {
                pass(
                    k,
                    &mut passes[k],
                    &dy_cur[..wide],
                    &mut grads.layers[k],
                    &mut dx_dirs[0],
                    states.0,
                )?;
            } else {
                let [half_f, half_r] = &mut *halves;
                take_half(&dy_cur[..wide], half_f, h, d, 0);
                take_half(&dy_cur[..wide], half_r, h, d, 1);
                let (pf, pr) = passes[2 * k..2 * k + 2].split_at_mut(1);
                let (gf, gr) = grads.layers[2 * k..2 * k + 2].split_at_mut(1);
                let (xf, xr) = dx_dirs.split_at_mut(1);
                let (sf, sr) = states;
                self.both(
                    || pass(2 * k, &mut pf[0], half_f, &mut gf[0], &mut xf[0], sf),
                    || pass(2 * k + 1, &mut pr[0], half_r, &mut gr[0], &mut xr[0], sr),
                )?;
            }
            // The gradient of layer k's input: the directions' sum.
            let target: &mut [F] = if k == 0 {
                match inputs.dx.as_deref_mut() {
                    Some(dx) => dx,
                    None => continue,
                }
            } else {
                &mut dy_next[..t * b * in_w]
            };
            target.copy_from_slice(&dx_dirs[0][..t * b * in_w]);
            for extra in &dx_dirs[1..] {
                for (a, v) in target.iter_mut().zip(&extra[..t * b * in_w]) {
                    *a += *v;
                }
            }
            if k > 0 && *masked {
                // Through the dropout: the same mask, the same scale.
                for (a, m) in target.iter_mut().zip(&masks[k - 1]) {
                    *a *= *m;
                }
            }
            core::mem::swap(dy_cur, dy_next);
        }
        Ok(())
    }
}
