//! Conformance against PyTorch: runs one of the shared PyTorch cases through our layer and
//! compares every output and gradient.
//!
//! ```text
//! cargo run --release --example conformance -- CASE.safetensors [CASE2.safetensors ...]
//! ```
//!
//! A case is `CASE.safetensors` (PyTorch `state_dict` names `weight_ih_l0`, ..., inputs `x`,
//! `h0`, `c0`, upstream gradients `dY`, `dh_T`, `dc_T`, PyTorch's outputs `y`, `h_T`, `c_T` and
//! gradients `dx`, `dh0`, `dc0`, `dW_ih`, `dW_hh`, `db_ih`, `db_hh`) beside its sidecar
//! `CASE.json` (cell, dtype, dims, `num_layers`, `bidirectional`, `lengths`). The layer is built
//! with [`fused_rnn::interop::pytorch`], run forward (training) and backward on the case's loss
//! `L = sum(y*dY) + sum(h_T*dh_T) [+ sum(c_T*dc_T)]`, and each tensor is printed with its max
//! absolute error and max relative error. A case with `lengths` (PyTorch's packed sequences)
//! runs as a padded batch (a workspace of `Batch::Padded`); the file's padding of
//! `x` and `dY` holds random values that must not matter.
//!
//! # Errors and tolerance
//!
//! The relative error of an element is `|ours - torch| / max(|torch|, rms(torch tensor))`: an
//! element's rounding error scales with the size of the terms it sums, not with the element
//! itself, which can cancel to near zero (the same floor as
//! `testkit::tolerance::assert_close`). A tensor passes when its max relative error is at most
//! the tolerance:
//!
//! - f64 cases: `1e-10`.
//! - f32 cases (`*_f32`, PyTorch's own f32 results on the f64 case's inputs rounded to f32):
//!   `2 · 8 · eps_f32 · (4 + sqrt((I + H) · T · B))`. `8 · eps_f32 · (4 + sqrt((I+H)·T·B))` is the
//!   bound `testkit::tolerance::f32_tolerance` derives for any f32 evaluation of these layers
//!   against exact (f64) arithmetic on the same inputs; ours and PyTorch's are two such
//!   evaluations, so their difference is within twice that.
//!
//! # Exit codes
//!
//! `0` every tensor within tolerance; `1` some tensor exceeds it; `2` usage, I/O or format error
//! (missing sidecar, unknown cell, wrong names, dtypes or shapes); `3` the case needs a feature
//! not implemented yet (several layers, bidirectional): the message names it, and nothing is
//! compared. With several cases the code is the most severe one, in the
//! order 1, 2, 3, 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fused_rnn::interop::pytorch::{DtypePolicy, StateDict};
use fused_rnn::{
    Batch, CellKind, Dims, Direction, Directions, FinalState, Float, GradMode, GruVariant,
    InitialState, InputGrads, Isa, Layer, Mode, RnnActivation, Stack, Upstream,
};

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    /// The fixture's name for it (`y`, `dW_ih`, ...).
    pub name: String,
    /// Number of elements.
    pub len: usize,
    /// `max |ours - torch|`.
    pub max_abs: f64,
    /// `max |ours - torch| / max(|torch|, rms(torch))`; infinite where exactly one is NaN.
    pub max_rel: f64,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name (file stem).
    pub case: String,
    /// The cell kind from the sidecar.
    pub cell: CellKind,
    /// `"f32"` or `"f64"`.
    pub dtype: &'static str,
    /// `T`, `B`, `I`, `H`.
    pub dims: Dims,
    /// The relative tolerance applied (see the module docs).
    pub tol: f64,
    /// The instruction-set path the layer ran on.
    pub isa: Isa,
    /// Every compared tensor.
    pub tensors: Vec<TensorReport>,
}

impl CaseReport {
    /// Whether every tensor is within tolerance (NaN errors fail).
    pub fn passed(&self) -> bool {
        self.tensors.iter().all(|t| t.max_rel <= self.tol)
    }

    /// The report as printed: a header and one line per tensor.
    pub fn render(&self) -> String {
        let d = self.dims;
        let mut s = format!(
            "case {} ({}, {}, {}, T={} B={} I={} H={}): tolerance {:.3e} on |ours - torch| / max(|torch|, rms(torch))\n",
            self.case,
            self.cell.name(),
            self.dtype,
            self.isa.name(),
            d.seq_len,
            d.batch,
            d.input,
            d.hidden,
            self.tol
        );
        for t in &self.tensors {
            s.push_str(&format!(
                "  {:<6} n={:<5} max_abs {:.3e}  max_rel {:.3e}  {}\n",
                t.name,
                t.len,
                t.max_abs,
                t.max_rel,
                if t.max_rel <= self.tol { "ok" } else { "FAIL" }
            ));
        }
        s.push_str(if self.passed() { "PASS\n" } else { "FAIL\n" });
        s
    }
}

/// Why a case was not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseError {
    /// Bad command line.
    Usage(String),
    /// The case or its sidecar cannot be read.
    Io(String),
    /// The files do not describe a case this tool understands (names, dtypes, shapes, cell).
    Format(String),
    /// The case needs a feature the crate does not have yet; nothing was compared.
    NeedsFeature(String),
}

impl CaseError {
    /// The process exit code for this error: 2, or 3 for [`CaseError::NeedsFeature`].
    pub fn exit_code(&self) -> u8 {
        match self {
            CaseError::NeedsFeature(_) => 3,
            _ => 2,
        }
    }
}

impl std::fmt::Display for CaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaseError::Usage(m) => write!(f, "usage: {m}"),
            CaseError::Io(m) => write!(f, "I/O error: {m}"),
            CaseError::Format(m) => write!(f, "format error: {m}"),
            CaseError::NeedsFeature(m) => write!(f, "not compared, needs a feature: {m}"),
        }
    }
}

/// The f32 tolerance of the module docs: twice `testkit::tolerance::f32_tolerance`.
pub fn f32_tolerance(d: &Dims) -> f64 {
    const C: f64 = 8.0;
    let n = ((d.input + d.hidden) * d.seq_len * d.batch) as f64;
    2.0 * C * f64::from(f32::EPSILON) * (4.0 + n.sqrt())
}

/// The f64 tolerance: `1e-10` relative.
pub const F64_TOLERANCE: f64 = 1e-10;

fn fmt_err(e: impl std::fmt::Display) -> CaseError {
    CaseError::Format(e.to_string())
}

/// What the sidecar says.
struct Sidecar {
    cell: CellKind,
    dtype: &'static str,
    dims: Dims,
    /// `L` and the directions (PyTorch's `num_layers`, `bidirectional`).
    num_layers: usize,
    directions: Directions,
    /// Each row's valid steps, for a variable-length (packed) case.
    lengths: Option<Vec<usize>>,
}

fn read_sidecar(path: &Path, sd: &StateDict<'_>) -> Result<Sidecar, CaseError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CaseError::Io(format!("sidecar {}: {e}", path.display())))?;
    let j: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CaseError::Format(format!("sidecar {}: {e}", path.display())))?;
    let str_field = |k: &str| {
        j.get(k)
            .and_then(|v| v.as_str())
            .ok_or_else(|| CaseError::Format(format!("sidecar lacks the string field `{k}`")))
    };
    // Features first: a case that needs one is never compared, whatever else it holds.
    let dropout = j.get("dropout").and_then(|v| v.as_f64()).unwrap_or(0.0);
    if dropout != 0.0 {
        return Err(CaseError::NeedsFeature(format!(
            "PyTorch's own dropout masks (dropout = {dropout}): a case with dropout can only be compared with the masks PyTorch drew, which the file does not hold"
        )));
    }
    let num_layers = j
        .get("num_layers")
        .and_then(|v| v.as_u64())
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(1);
    let directions = if j.get("bidirectional").and_then(|v| v.as_bool()) == Some(true) {
        Directions::Both
    } else {
        Directions::Forward
    };
    let lengths = match j.get("lengths") {
        None | Some(serde_json::Value::Null) => None,
        Some(l) => Some(
            l.as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_u64().and_then(|v| usize::try_from(v).ok()))
                        .collect::<Option<Vec<usize>>>()
                })
                .ok_or_else(|| {
                    CaseError::Format(format!("sidecar `lengths` is not a list of counts: {l}"))
                })?,
        ),
    };
    // The file must agree: a sidecar claiming a plain case for a file with more layers, or
    // lengths the file lacks (or the other way round), would otherwise be compared wrongly.
    // (A stack case's layers and directions are checked against the parameters' names when
    // the stack is loaded.)
    if num_layers == 1 && directions == Directions::Forward {
        for n in sd.names() {
            if n.ends_with("_reverse") || n.starts_with("grad.") || n.contains("_l1") {
                return Err(CaseError::Format(format!(
                    "the sidecar describes a single-layer case, but the file holds `{n}`"
                )));
            }
        }
    }
    if sd.contains("lengths") != lengths.is_some() {
        return Err(CaseError::Format(format!(
            "the sidecar {} `lengths`, the file {}",
            if lengths.is_some() { "gives" } else { "has no" },
            if sd.contains("lengths") {
                "holds them"
            } else {
                "does not"
            }
        )));
    }
    if let Some(l) = &lengths {
        let file = sd.counts("lengths").map_err(fmt_err)?;
        if &file != l {
            return Err(CaseError::Format(format!(
                "the sidecar's lengths {l:?} are not the file's {file:?}"
            )));
        }
    }
    let cell = match str_field("cell")? {
        "lstm" => CellKind::Lstm,
        "gru" => CellKind::Gru(GruVariant::ResetAfter),
        "gru_reset_before" => CellKind::Gru(GruVariant::ResetBefore),
        "rnn_tanh" => CellKind::Rnn(RnnActivation::Tanh),
        "rnn_relu" => CellKind::Rnn(RnnActivation::Relu),
        other => {
            return Err(CaseError::Format(format!(
                "unknown cell `{other}` (expected lstm, gru, gru_reset_before, rnn_tanh or rnn_relu)"
            )));
        }
    };
    let dtype = match str_field("dtype")? {
        "float64" => "f64",
        "float32" => "f32",
        other => {
            return Err(CaseError::Format(format!(
                "unsupported dtype `{other}` (expected float32 or float64)"
            )));
        }
    };
    let shapes = j
        .get("shapes")
        .ok_or_else(|| CaseError::Format("sidecar lacks `shapes`".into()))?;
    let dim = |k: &str| {
        shapes
            .get(k)
            .and_then(|v| v.as_u64())
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| CaseError::Format(format!("sidecar `shapes` lacks `{k}`")))
    };
    let dims = Dims {
        seq_len: dim("T")?,
        batch: dim("B")?,
        input: dim("I")?,
        hidden: dim("H")?,
    };
    dims.validate(cell).map_err(fmt_err)?;
    if let Some(l) = &lengths
        && (l.len() != dims.batch || l.iter().any(|&n| n > dims.seq_len))
    {
        return Err(CaseError::Format(format!(
            "sidecar `lengths` {l:?} do not fit B = {}, T = {}",
            dims.batch, dims.seq_len
        )));
    }
    Ok(Sidecar {
        cell,
        dtype,
        dims,
        num_layers,
        directions,
        lengths,
    })
}

/// Reads tensor `name`, which must have exactly `shape`.
fn get<F: Float>(sd: &StateDict<'_>, name: &str, shape: &[usize]) -> Result<Vec<F>, CaseError> {
    let t = sd.tensor::<F>(name, DtypePolicy::Exact).map_err(fmt_err)?;
    if t.shape != shape {
        return Err(CaseError::Format(format!(
            "tensor {name}: expected shape {shape:?}, got {:?}",
            t.shape
        )));
    }
    Ok(t.data)
}

fn widen<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|a| a.to_f64()).collect()
}

/// Runs the case's forward and backward; returns (name, ours, torch's) per tensor.
type Compared = Vec<(String, Vec<f64>, Vec<f64>)>;

fn run<F: Float>(
    sd: &StateDict<'_>,
    s: &Sidecar,
    isa: Option<Isa>,
) -> Result<(Compared, Isa), CaseError> {
    let mut layer: Layer<F> = sd
        .layer(s.cell, 0, Direction::Forward, DtypePolicy::Exact)
        .map_err(fmt_err)?;
    if let Some(isa) = isa {
        layer.set_isa(isa).map_err(fmt_err)?;
    }
    let d = s.dims;
    if (layer.input_size(), layer.hidden_size()) != (d.input, d.hidden) {
        return Err(CaseError::Format(format!(
            "parameters give I = {}, H = {}; the sidecar says I = {}, H = {}",
            layer.input_size(),
            layer.hidden_size(),
            d.input,
            d.hidden
        )));
    }
    let (t, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let gh = s.cell.gates() * h;
    let lstm = s.cell.has_cell_state();
    let x: Vec<F> = get(sd, "x", &[t, b, i])?;
    let h0: Vec<F> = get(sd, "h0", &[1, b, h])?;
    let dy: Vec<F> = get(sd, "dY", &[t, b, h])?;
    let dh_t: Vec<F> = get(sd, "dh_T", &[1, b, h])?;
    let (c0, dc_t) = if lstm {
        (
            Some(get::<F>(sd, "c0", &[1, b, h])?),
            Some(get::<F>(sd, "dc_T", &[1, b, h])?),
        )
    } else {
        (None, None)
    };

    let nan = F::from_f64(f64::NAN);
    let mut y = vec![nan; d.y_len()];
    let mut h_n = vec![nan; d.state_len()];
    let mut c_n = vec![nan; d.state_len()];
    let init = InitialState {
        h0: Some(&h0),
        c0: c0.as_deref(),
    };
    let fin = FinalState {
        h_n: Some(&mut h_n),
        c_n: lstm.then_some(&mut c_n[..]),
    };
    // A packed case runs as a padded batch.
    let batch = match &s.lengths {
        Some(l) => Batch::Padded(l),
        None => Batch::Fixed(b),
    };
    let mut ws = layer.workspace(t, batch, Mode::Training).map_err(fmt_err)?;
    layer
        .forward(&mut ws, Direction::Forward, &x, init, &mut y, fin)
        .map_err(fmt_err)?;
    let mut grads = layer.zero_grads().map_err(fmt_err)?;
    let mut dx = vec![nan; d.x_len()];
    let mut dh0 = vec![nan; d.state_len()];
    let mut dc0 = vec![nan; d.state_len()];
    let up = Upstream {
        dy: Some(&dy),
        dh_n: Some(&dh_t),
        dc_n: dc_t.as_deref(),
    };
    let inputs = InputGrads {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: lstm.then_some(&mut dc0[..]),
    };
    layer
        .backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)
        .map_err(fmt_err)?;

    let mut out: Compared = vec![
        (
            "y".into(),
            widen(&y),
            widen(&get::<F>(sd, "y", &[t, b, h])?),
        ),
        (
            "h_T".into(),
            widen(&h_n),
            widen(&get::<F>(sd, "h_T", &[1, b, h])?),
        ),
    ];
    if lstm {
        out.push((
            "c_T".into(),
            widen(&c_n),
            widen(&get::<F>(sd, "c_T", &[1, b, h])?),
        ));
    }
    out.push((
        "dx".into(),
        widen(&dx),
        widen(&get::<F>(sd, "dx", &[t, b, i])?),
    ));
    out.push((
        "dh0".into(),
        widen(&dh0),
        widen(&get::<F>(sd, "dh0", &[1, b, h])?),
    ));
    if lstm {
        out.push((
            "dc0".into(),
            widen(&dc0),
            widen(&get::<F>(sd, "dc0", &[1, b, h])?),
        ));
    }
    out.push((
        "dW_ih".into(),
        widen(&grads.weight_ih),
        widen(&get::<F>(sd, "dW_ih", &[gh, i])?),
    ));
    out.push((
        "dW_hh".into(),
        widen(&grads.weight_hh),
        widen(&get::<F>(sd, "dW_hh", &[gh, h])?),
    ));
    out.push((
        "db_ih".into(),
        widen(&grads.bias_ih),
        widen(&get::<F>(sd, "db_ih", &[gh])?),
    ));
    out.push((
        "db_hh".into(),
        widen(&grads.bias_hh),
        widen(&get::<F>(sd, "db_hh", &[gh])?),
    ));
    Ok((out, layer.isa()))
}

/// A single layer's case or a stack's.
fn run_any<F: Float>(
    sd: &StateDict<'_>,
    s: &Sidecar,
    isa: Option<Isa>,
) -> Result<(Compared, Isa), CaseError> {
    if s.num_layers == 1 && s.directions == Directions::Forward {
        run::<F>(sd, s, isa)
    } else {
        run_stack::<F>(sd, s, isa)
    }
}

/// The dimensions the f32 tolerance is derived from: a stack's layers `k >= 1` read `D·H`
/// inputs and chain `L` layers, so its terms are those of one layer with the widest input and
/// `L` times the steps.
fn stack_dims(s: &Sidecar) -> Dims {
    let d = s.dims;
    Dims {
        seq_len: d.seq_len * s.num_layers,
        input: d.input.max(s.directions.count() * d.hidden),
        ..d
    }
}

/// Runs a stack case (several layers or both directions) through [`Stack`]: `y`, the states,
/// `dx`, `dh0`, `dc0` and the gradient of every parameter (`grad.<name>`).
fn run_stack<F: Float>(
    sd: &StateDict<'_>,
    s: &Sidecar,
    isa: Option<Isa>,
) -> Result<(Compared, Isa), CaseError> {
    let mut stack: Stack<F> = sd.stack("", s.cell, DtypePolicy::Exact).map_err(fmt_err)?;
    let d = s.dims;
    if (stack.num_layers(), stack.directions()) != (s.num_layers, s.directions)
        || (stack.input_size(), stack.hidden_size()) != (d.input, d.hidden)
    {
        return Err(CaseError::Format(format!(
            "parameters give {} layers, {:?}, I = {}, H = {}; the sidecar says {} layers, {:?}, I = {}, H = {}",
            stack.num_layers(),
            stack.directions(),
            stack.input_size(),
            stack.hidden_size(),
            s.num_layers,
            s.directions,
            d.input,
            d.hidden
        )));
    }
    if let Some(isa) = isa {
        for k in 0..s.num_layers {
            for dir in s.directions.iter() {
                let l = stack.layer_mut(k, dir).expect("a layer of the stack");
                l.set_isa(isa).map_err(fmt_err)?;
            }
        }
    }
    let (t, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let (sl, dh) = (
        s.num_layers * s.directions.count(),
        s.directions.count() * h,
    );
    let lstm = s.cell.has_cell_state();
    let x: Vec<F> = get(sd, "x", &[t, b, i])?;
    let h0: Vec<F> = get(sd, "h0", &[sl, b, h])?;
    let dy: Vec<F> = get(sd, "dY", &[t, b, dh])?;
    let dh_t: Vec<F> = get(sd, "dh_T", &[sl, b, h])?;
    let (c0, dc_t) = if lstm {
        (
            Some(get::<F>(sd, "c0", &[sl, b, h])?),
            Some(get::<F>(sd, "dc_T", &[sl, b, h])?),
        )
    } else {
        (None, None)
    };
    let nan = F::from_f64(f64::NAN);
    let (mut y, mut h_n, mut c_n) = (
        vec![nan; t * b * dh],
        vec![nan; sl * b * h],
        vec![nan; sl * b * h],
    );
    let batch = match &s.lengths {
        Some(l) => Batch::Padded(l),
        None => Batch::Fixed(b),
    };
    let mut ws = stack.workspace(t, batch, Mode::Training).map_err(fmt_err)?;
    stack
        .forward(
            &mut ws,
            &x,
            InitialState {
                h0: Some(&h0),
                c0: c0.as_deref(),
            },
            &mut y,
            FinalState {
                h_n: Some(&mut h_n),
                c_n: lstm.then_some(&mut c_n[..]),
            },
        )
        .map_err(fmt_err)?;
    let mut grads = stack.zero_grads().map_err(fmt_err)?;
    let (mut dx, mut dh0, mut dc0) = (
        vec![nan; x.len()],
        vec![nan; sl * b * h],
        vec![nan; sl * b * h],
    );
    stack
        .backward(
            &mut ws,
            &x,
            Upstream {
                dy: Some(&dy),
                dh_n: Some(&dh_t),
                dc_n: dc_t.as_deref(),
            },
            &mut grads,
            InputGrads {
                dx: Some(&mut dx),
                dh0: Some(&mut dh0),
                dc0: lstm.then_some(&mut dc0[..]),
            },
            GradMode::Overwrite,
        )
        .map_err(fmt_err)?;
    let mut out: Compared = vec![
        (
            "y".into(),
            widen(&y),
            widen(&get::<F>(sd, "y", &[t, b, dh])?),
        ),
        (
            "h_T".into(),
            widen(&h_n),
            widen(&get::<F>(sd, "h_T", &[sl, b, h])?),
        ),
    ];
    if lstm {
        out.push((
            "c_T".into(),
            widen(&c_n),
            widen(&get::<F>(sd, "c_T", &[sl, b, h])?),
        ));
    }
    out.push((
        "dx".into(),
        widen(&dx),
        widen(&get::<F>(sd, "dx", &[t, b, i])?),
    ));
    out.push((
        "dh0".into(),
        widen(&dh0),
        widen(&get::<F>(sd, "dh0", &[sl, b, h])?),
    ));
    if lstm {
        out.push((
            "dc0".into(),
            widen(&dc0),
            widen(&get::<F>(sd, "dc0", &[sl, b, h])?),
        ));
    }
    let gh = s.cell.gates() * h;
    for ((k, dir, layer), g) in stack.layers().zip(&grads.layers) {
        let sfx = format!("_l{k}{}", dir.suffix());
        for (param, ours, shape) in [
            ("weight_ih", &g.weight_ih, vec![gh, layer.input_size()]),
            ("weight_hh", &g.weight_hh, vec![gh, h]),
            ("bias_ih", &g.bias_ih, vec![gh]),
            ("bias_hh", &g.bias_hh, vec![gh]),
        ] {
            let name = format!("grad.{param}{sfx}");
            let want = get::<F>(sd, &name, &shape)?;
            out.push((name, widen(ours), widen(&want)));
        }
    }
    let isa = stack.layer(0, Direction::Forward).expect("layer 0").isa();
    Ok((out, isa))
}

/// Max absolute and max relative error of `got` against `want` (see the module docs).
pub fn errors(got: &[f64], want: &[f64]) -> (f64, f64) {
    let rms = (want.iter().map(|a| a * a).sum::<f64>() / want.len().max(1) as f64).sqrt();
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let err = (g - w).abs();
        if g.is_nan() && w.is_nan() {
            continue;
        }
        if err.is_nan() {
            // One NaN, or opposite infinities.
            return (f64::INFINITY, f64::INFINITY);
        }
        let denom = w.abs().max(rms);
        let rel = if err == 0.0 {
            0.0
        } else if denom == 0.0 {
            f64::INFINITY
        } else {
            err / denom
        };
        max_abs = max_abs.max(err);
        max_rel = max_rel.max(rel);
    }
    (max_abs, max_rel)
}

/// Runs the case `path` (`CASE.safetensors`, sidecar `CASE.json` beside it) on the layer's
/// default instruction set.
pub fn run_case(path: &Path) -> Result<CaseReport, CaseError> {
    run_case_on(path, None)
}

/// As [`run_case`], on instruction set `isa` if given (f32 only; f64 has one path).
pub fn run_case_on(path: &Path, isa: Option<Isa>) -> Result<CaseReport, CaseError> {
    let bytes =
        std::fs::read(path).map_err(|e| CaseError::Io(format!("{}: {e}", path.display())))?;
    let sd = StateDict::parse(&bytes).map_err(fmt_err)?;
    let side: PathBuf = path.with_extension("json");
    let s = read_sidecar(&side, &sd)?;
    let (compared, used_isa, tol) = match s.dtype {
        "f64" => {
            let (c, i) = run_any::<f64>(&sd, &s, isa)?;
            (c, i, F64_TOLERANCE)
        }
        _ => {
            let (c, i) = run_any::<f32>(&sd, &s, isa)?;
            (c, i, f32_tolerance(&stack_dims(&s)))
        }
    };
    let tensors = compared
        .into_iter()
        .map(|(name, got, want)| {
            let (max_abs, max_rel) = errors(&got, &want);
            TensorReport {
                name,
                len: want.len(),
                max_abs,
                max_rel,
            }
        })
        .collect();
    Ok(CaseReport {
        case: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cell: s.cell,
        dtype: s.dtype,
        dims: s.dims,
        tol,
        isa: used_isa,
        tensors,
    })
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() || paths.iter().any(|p| p.to_str() == Some("--help")) {
        eprintln!(
            "usage: conformance CASE.safetensors [CASE.safetensors ...]\n\
             (each with its CASE.json sidecar beside it)\n\
             exit codes: 0 pass, 1 tolerance exceeded, 2 usage/IO/format error, 3 case needs a feature not implemented yet"
        );
        return ExitCode::from(2);
    }
    // Severity order 1 > 2 > 3 > 0.
    let rank = |c: u8| match c {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => 0,
    };
    let mut code = 0u8;
    for p in &paths {
        let c = match run_case(p) {
            Ok(r) => {
                print!("{}", r.render());
                if r.passed() { 0 } else { 1 }
            }
            Err(e) => {
                println!("case {}: {e}", p.display());
                e.exit_code()
            }
        };
        if rank(c) > rank(code) {
            code = c;
        }
    }
    ExitCode::from(code)
}
