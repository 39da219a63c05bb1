//! PyTorch `state_dict`s stored as safetensors: load them into [`Layer`]s and save layers the
//! same way, losslessly.
//!
//! # Names and shapes
//!
//! `nn.RNN`, `nn.LSTM` and `nn.GRU` name the parameters of layer `k` (direction forward, or
//! reverse with the suffix `_reverse`):
//!
//! | name                            | shape        |
//! |---------------------------------|--------------|
//! | `weight_ih_l{k}{_reverse}`      | `[G*H, I_k]` |
//! | `weight_hh_l{k}{_reverse}`      | `[G*H, H]`   |
//! | `bias_ih_l{k}{_reverse}`        | `[G*H]`      |
//! | `bias_hh_l{k}{_reverse}`        | `[G*H]`      |
//!
//! with `G` = 1 (RNN), 4 (LSTM, gate rows `i, f, g, o`), 3 (GRU, rows `r, z, n`): exactly
//! [`Layer`]'s own layout, so loading and saving copy values without reordering. `I_0` is the
//! input width, `I_k` for `k >= 1` is `num_directions * H`. A model saved from a wrapping module
//! has prefixed names (`rnn.weight_ih_l0`); [`StateDict::layer_with_prefix`] takes the prefix.
//!
//! `H` is read from `weight_hh`'s second axis and `I` from `weight_ih`'s; every other extent is
//! checked against them and against the cell's gate count, and a mismatch names the tensor, the
//! shape it needs and the shape it has. Zero-size tensors (`H = 0` or `I = 0`) are refused the
//! same way, as an [`Error::Format`]. Modules built with `bias=False` have no bias tensors and
//! are refused (the error says which name is missing); give such a layer zero biases instead.
//!
//! # What the file does not say
//!
//! A state_dict does not record the cell kind: the caller names it. In particular PyTorch's
//! `nn.GRU` is [`GruVariant::ResetAfter`]; [`GruVariant::ResetBefore`] parameters use the same
//! names and shapes (as in the shared fixtures) but a PyTorch `nn.GRU` loading them would
//! compute a different function. Likewise `nn.RNN`'s `nonlinearity` is the caller's
//! [`RnnActivation`](crate::RnnActivation).
//!
//! # Element types
//!
//! Tensors must be `F32` or `F64` (others, e.g. `BF16`, are refused with their dtype named).
//! [`DtypePolicy::Exact`] requires the file's dtype to be `F`; [`DtypePolicy::Convert`] also
//! accepts the other one and converts: f32 to f64 is exact, f64 to f32 rounds to nearest.
//! [`save_layers`] writes `F`'s dtype, little-endian, so `save` then `load` with the same `F`
//! gives back the same bits, and PyTorch's `safetensors.torch.load_file` reads the file as the
//! tensors PyTorch saved.
//!
//! [`GruVariant::ResetAfter`]: crate::GruVariant::ResetAfter
//! [`GruVariant::ResetBefore`]: crate::GruVariant::ResetBefore

use std::collections::{BTreeSet, HashMap};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::Direction;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::layer::Layer;
use crate::shape::CellKind;
use crate::stack::{Directions, Stack};
use crate::weights::LayerWeights;

/// Whether a tensor's dtype must equal the requested element type or may be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtypePolicy {
    /// The file's dtype must be `F` (`F32` for `f32`, `F64` for `f64`); anything else is an
    /// [`Error::Format`].
    Exact,
    /// `F32` and `F64` are both accepted and converted to `F` (f32 to f64 exactly, f64 to f32
    /// rounded to nearest).
    Convert,
}

/// One of a layer's four parameter tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `weight_ih`, `[G*H, I]`.
    WeightIh,
    /// `weight_hh`, `[G*H, H]`.
    WeightHh,
    /// `bias_ih`, `[G*H]`.
    BiasIh,
    /// `bias_hh`, `[G*H]`.
    BiasHh,
}

impl Param {
    /// All four, in the order PyTorch's `state_dict` lists them.
    pub const ALL: [Param; 4] = [
        Param::WeightIh,
        Param::WeightHh,
        Param::BiasIh,
        Param::BiasHh,
    ];

    /// The name without layer and direction: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
    pub const fn base(self) -> &'static str {
        match self {
            Param::WeightIh => "weight_ih",
            Param::WeightHh => "weight_hh",
            Param::BiasIh => "bias_ih",
            Param::BiasHh => "bias_hh",
        }
    }
}

/// PyTorch's `state_dict` name of `param` for `layer` and `direction`, e.g.
/// `param_name(Param::WeightHh, 1, Direction::Reverse) == "weight_hh_l1_reverse"`.
pub fn param_name(param: Param, layer: usize, direction: Direction) -> String {
    format!("{}_l{layer}{}", param.base(), direction.suffix())
}

/// A tensor read from a file: its shape and its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<F> {
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<F>,
}

/// A parsed safetensors file (borrowing its bytes), from which tensors and layers are read.
pub struct StateDict<'a> {
    st: SafeTensors<'a>,
}

impl core::fmt::Debug for StateDict<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StateDict")
            .field("names", &self.names())
            .finish()
    }
}

/// The safetensors dtype that stores `F`.
fn dtype_of<F: Float>() -> Dtype {
    if F::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// `"F32"`, `"BF16"`, ...: safetensors' own spelling.
fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

fn format_err(
    what: impl Into<String>,
    expected: impl Into<String>,
    got: impl Into<String>,
) -> Error {
    Error::Format {
        what: what.into(),
        expected: expected.into(),
        got: got.into(),
    }
}

fn shape_str(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(|v| v.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

impl<'a> StateDict<'a> {
    /// Parses a safetensors file held in memory (zero-copy: tensors are decoded when read).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            format_err(
                "safetensors file",
                "a valid safetensors header and data section",
                e.to_string(),
            )
        })?;
        Ok(StateDict { st })
    }

    /// Every tensor name in the file, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut n = self.st.names();
        n.sort_unstable();
        n
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    fn view(&self, name: &str) -> Result<TensorView<'a>> {
        self.st.tensor(name).map_err(|_| {
            const SHOWN: usize = 24;
            let names = self.names();
            let mut list = names
                .iter()
                .take(SHOWN)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if names.len() > SHOWN {
                list.push_str(&format!(", ... ({} in all)", names.len()));
            }
            format_err(
                format!("tensor {name}"),
                "present in the file",
                format!("absent; the file holds: {list}"),
            )
        })
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.shape().to_vec())
    }

    /// Reads tensor `name` as `F`, checking its dtype by `policy`.
    pub fn tensor<F: Float>(&self, name: &str, policy: DtypePolicy) -> Result<Tensor<F>> {
        let v = self.view(name)?;
        let want = dtype_of::<F>();
        let dt = v.dtype();
        match (dt, policy) {
            (d, _) if d == want => {}
            (Dtype::F32 | Dtype::F64, DtypePolicy::Convert) => {}
            (Dtype::F32 | Dtype::F64, DtypePolicy::Exact) => {
                return Err(format_err(
                    format!("tensor {name} dtype"),
                    format!(
                        "{} (for {}; DtypePolicy::Convert would convert)",
                        dtype_name(want),
                        F::NAME
                    ),
                    dtype_name(dt),
                ));
            }
            (other, _) => {
                return Err(format_err(
                    format!("tensor {name} dtype"),
                    "F32 or F64",
                    dtype_name(other),
                ));
            }
        }
        let shape = v.shape().to_vec();
        let n = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| {
                format_err(
                    format!("tensor {name} shape"),
                    "an element count that fits in usize",
                    shape_str(&shape),
                )
            })?;
        let bytes = v.data();
        let size = if dt == Dtype::F32 { 4 } else { 8 };
        if Some(bytes.len()) != n.checked_mul(size) {
            return Err(format_err(
                format!("tensor {name} data"),
                format!("{n} elements of {size} bytes"),
                format!("{} bytes", bytes.len()),
            ));
        }
        let data: Vec<F> = if dt == Dtype::F32 {
            bytes
                .chunks_exact(4)
                .map(|c| F::from_f64(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
                .collect()
        } else {
            bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    F::from_f64(f64::from_le_bytes(a))
                })
                .collect()
        };
        Ok(Tensor { shape, data })
    }

    /// Builds the layer `layer`, `direction` of a `cell` module from its four parameters
    /// (PyTorch names, no prefix). `I` and `H` come from the shapes; see the module docs for
    /// what is checked.
    pub fn layer<F: Float>(
        &self,
        cell: CellKind,
        layer: usize,
        direction: Direction,
        policy: DtypePolicy,
    ) -> Result<Layer<F>> {
        self.layer_with_prefix("", cell, layer, direction, policy)
    }

    /// A whole `nn.RNN` / `nn.LSTM` / `nn.GRU` module of `cell` (names after `prefix`, `""` for
    /// a module saved alone): the number of layers and the directions come from the names
    /// (`weight_ih_l{k}` for `k = 0..L`, with `_reverse` twins for a bidirectional one). A gap
    /// in the layers, a reverse half in some layers only, a parameter name past the layers,
    /// or a missing or mis-shaped tensor is an [`Error::Format`] naming it; other tensors in
    /// the file are ignored.
    pub fn stack<F: Float>(
        &self,
        prefix: &str,
        cell: CellKind,
        policy: DtypePolicy,
    ) -> Result<Stack<F>> {
        // Every recurrent parameter name after the prefix: (layer, reverse).
        let mut found = BTreeSet::new();
        for name in self.names() {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let Some(param) = ["weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l"]
                .iter()
                .find_map(|p| rest.strip_prefix(p))
            else {
                continue;
            };
            let (digits, reverse) = match param.strip_suffix("_reverse") {
                Some(d) => (d, true),
                None => (param, false),
            };
            match digits.parse::<usize>() {
                Ok(k) if !digits.starts_with('+') => {
                    found.insert((k, reverse));
                }
                _ => {
                    return Err(format_err(
                        format!("tensor {name}"),
                        format!("{prefix}weight_ih_l{{k}}[_reverse] and the like"),
                        "a name that is not a layer's parameter",
                    ));
                }
            }
        }
        let num_layers = found.iter().map(|(k, _)| k + 1).max().ok_or_else(|| {
            format_err(
                format!("{prefix}weight_ih_l0"),
                "the parameters of at least one layer",
                "none",
            )
        })?;
        let bidirectional = found.iter().any(|(_, r)| *r);
        for k in 0..num_layers {
            for reverse in [false, bidirectional] {
                if !found.contains(&(k, reverse)) {
                    let suffix = if reverse { "_reverse" } else { "" };
                    return Err(format_err(
                        format!("{prefix}weight_ih_l{k}{suffix}"),
                        format!(
                            "layer {k} of {num_layers}{}",
                            if bidirectional {
                                ", both directions"
                            } else {
                                ""
                            }
                        ),
                        "missing",
                    ));
                }
            }
        }
        let directions = if bidirectional {
            Directions::Both
        } else {
            Directions::Forward
        };
        let layers = (0..num_layers)
            .flat_map(|k| directions.iter().map(move |dir| (k, dir)))
            .map(|(k, dir)| self.layer_with_prefix(prefix, cell, k, dir, policy))
            .collect::<Result<Vec<_>>>()?;
        Stack::new(layers, num_layers, directions).map_err(|e| {
            format_err(
                format!("{prefix}weight_ih_l{{k}} shapes"),
                "layer k >= 1 reading D*H inputs",
                e.to_string(),
            )
        })
    }

    /// An integer tensor as counts (e.g. the `lengths` of a packed batch, saved by PyTorch as
    /// int64): I64, I32, U64 or U32, every value at least 0 and within `usize`;
    /// [`Error::Format`] otherwise.
    pub fn counts(&self, name: &str) -> Result<Vec<usize>> {
        let v = self.view(name)?;
        let bytes = v.data();
        let bad = |why: String| format_err(format!("tensor {name}"), "counts (>= 0)", why);
        let values: Vec<i128> = match v.dtype() {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i128::from(i64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            Dtype::U64 => bytes
                .chunks_exact(8)
                .map(|c| i128::from(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i128::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|c| i128::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
            other => {
                return Err(format_err(
                    format!("tensor {name} dtype"),
                    "I64, I32, U64 or U32",
                    dtype_name(other),
                ));
            }
        };
        values
            .into_iter()
            .map(|x| usize::try_from(x).map_err(|_| bad(format!("the value {x}"))))
            .collect()
    }

    /// As [`StateDict::layer`], for names that start with `prefix` (e.g. `"encoder.rnn."`).
    pub fn layer_with_prefix<F: Float>(
        &self,
        prefix: &str,
        cell: CellKind,
        layer: usize,
        direction: Direction,
        policy: DtypePolicy,
    ) -> Result<Layer<F>> {
        let name = |p: Param| format!("{prefix}{}", param_name(p, layer, direction));
        let g = cell.gates();
        let cell_name = cell.name();
        let [n_ih, n_hh, n_bih, n_bhh] = Param::ALL.map(name);
        let w_hh = self.tensor::<F>(&n_hh, policy)?;
        let &[rows, h] = w_hh.shape.as_slice() else {
            return Err(format_err(
                format!("tensor {n_hh} shape"),
                format!("2 axes [G*H, H] with G = {g} for {cell_name}"),
                shape_str(&w_hh.shape),
            ));
        };
        if h == 0 {
            // Zero-size tensors: the file holds no layer (a ZeroDim would blame the caller).
            return Err(format_err(
                format!("tensor {n_hh} shape"),
                format!("[G*H, H] with H >= 1 (G = {g} for {cell_name})"),
                shape_str(&w_hh.shape),
            ));
        }
        if Some(rows) != g.checked_mul(h) {
            return Err(format_err(
                format!("tensor {n_hh} shape"),
                format!(
                    "[G*H, H] = [{}, {h}] (G = {g} for {cell_name}, H = {h} from its second axis)",
                    g.saturating_mul(h)
                ),
                shape_str(&w_hh.shape),
            ));
        }
        let w_ih = self.tensor::<F>(&n_ih, policy)?;
        let input = match w_ih.shape.as_slice() {
            &[r, i] if r == rows && i > 0 => i,
            _ => {
                return Err(format_err(
                    format!("tensor {n_ih} shape"),
                    format!(
                        "[G*H, I] = [{rows}, I] with I >= 1 (G = {g} for {cell_name}, H = {h})"
                    ),
                    shape_str(&w_ih.shape),
                ));
            }
        };
        let mut biases = Vec::with_capacity(2);
        for n in [&n_bih, &n_bhh] {
            let b = self.tensor::<F>(n, policy)?;
            if b.shape.as_slice() != [rows] {
                return Err(format_err(
                    format!("tensor {n} shape"),
                    format!("[G*H] = [{rows}] (G = {g} for {cell_name}, H = {h})"),
                    shape_str(&b.shape),
                ));
            }
            biases.push(b.data);
        }
        Layer::new(
            cell,
            input,
            h,
            LayerWeights {
                weight_ih: &w_ih.data,
                weight_hh: &w_hh.data,
                bias_ih: &biases[0],
                bias_hh: &biases[1],
            },
        )
    }
}

/// Loads layer `layer`, `direction` of a `cell` module from a safetensors `state_dict`, whose
/// tensors must have `F`'s dtype ([`DtypePolicy::Exact`]).
pub fn load_layer<F: Float>(
    bytes: &[u8],
    cell: CellKind,
    layer: usize,
    direction: Direction,
) -> Result<Layer<F>> {
    StateDict::parse(bytes)?.layer(cell, layer, direction, DtypePolicy::Exact)
}

/// As [`load_layer`], but f32 and f64 files are both accepted and converted to `F`
/// ([`DtypePolicy::Convert`]).
pub fn load_layer_converting<F: Float>(
    bytes: &[u8],
    cell: CellKind,
    layer: usize,
    direction: Direction,
) -> Result<Layer<F>> {
    StateDict::parse(bytes)?.layer(cell, layer, direction, DtypePolicy::Convert)
}

/// Little-endian bytes of `v` in `F`'s own width (exact).
fn le_bytes<F: Float>(v: &[F]) -> Vec<u8> {
    if F::NAME == "f32" {
        // to_f64 widens exactly, so narrowing back gives the same f32.
        v.iter()
            .flat_map(|a| (a.to_f64() as f32).to_le_bytes())
            .collect()
    } else {
        v.iter().flat_map(|a| a.to_f64().to_le_bytes()).collect()
    }
}

/// A whole stack as a PyTorch `state_dict` (safetensors bytes): every `(layer, direction)`'s
/// four parameters under PyTorch's names (`weight_ih_l{k}[_reverse]`, ...), which
/// `nn.LSTM(..., num_layers=L, bidirectional=D == 2).load_state_dict` takes as they are and
/// [`StateDict::stack`] reads back bit for bit.
pub fn save_stack<F: Float>(stack: &Stack<F>) -> Result<Vec<u8>> {
    let layers: Vec<(usize, Direction, &Layer<F>)> = stack.layers().collect();
    save_layers(&layers)
}

/// Serializes layers as a PyTorch `state_dict` in safetensors format, each entry
/// `(layer index, direction, layer)` under the names of [`param_name`], in `F`'s dtype, with
/// the metadata `{"format": "pt"}` that `safetensors.torch.save_file` writes.
///
/// The entries must form one module: the same cell kind and hidden size throughout, each
/// `(layer, direction)` at most once ([`Error::InvalidArgument`] otherwise). Which entries are
/// present is the caller's choice (a PyTorch module with `num_layers = L` expects all of
/// `0..L` for each of its directions).
pub fn save_layers<F: Float>(layers: &[(usize, Direction, &Layer<F>)]) -> Result<Vec<u8>> {
    let mut seen = BTreeSet::new();
    if let Some((_, _, first)) = layers.first() {
        for (k, dir, l) in layers {
            if !seen.insert((*k, dir.index())) {
                return Err(Error::InvalidArgument {
                    what: "layers",
                    why: format!("layer {k} direction {dir:?} is given twice"),
                });
            }
            if l.cell() != first.cell() || l.hidden_size() != first.hidden_size() {
                return Err(Error::InvalidArgument {
                    what: "layers",
                    why: format!(
                        "one module has one cell kind and hidden size: layer {k} {dir:?} is {} with H = {}, the first entry {} with H = {}",
                        l.cell().name(),
                        l.hidden_size(),
                        first.cell().name(),
                        first.hidden_size()
                    ),
                });
            }
        }
    }
    let dtype = dtype_of::<F>();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(4 * layers.len());
    for (k, dir, l) in layers {
        let w = l.weights();
        let gh = l.cell().gates() * l.hidden_size();
        for (p, data, shape) in [
            (Param::WeightIh, w.weight_ih, vec![gh, l.input_size()]),
            (Param::WeightHh, w.weight_hh, vec![gh, l.hidden_size()]),
            (Param::BiasIh, w.bias_ih, vec![gh]),
            (Param::BiasHh, w.bias_hh, vec![gh]),
        ] {
            owned.push((param_name(p, *k, *dir), shape, le_bytes(data)));
        }
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, shape, bytes) in &owned {
        let v = TensorView::new(dtype, shape.clone(), bytes).map_err(|e| {
            format_err(
                format!("tensor {name}"),
                "a consistent safetensors view",
                e.to_string(),
            )
        })?;
        views.push((name.as_str(), v));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| format_err("safetensors serialization", "success", e.to_string()))
}
