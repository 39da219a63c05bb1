//! The helpers fused-rnn's integration tests (`tests/`) and fuzz targets (`fuzz/`) share,
//! written once.
//!
//! - [`tolerance`]: how close an f32 or f64 result must be to the f64 oracle, and the
//!   comparison that says where and by how much it is not.
//! - [`random`]: seeded generators and [`random::RandomCase`], a layer's parameters, inputs and
//!   upstream gradients.
//! - [`oracle`]: one forward and backward of the fused layer and of the scalar reference on a
//!   case, every output widened to f64 in a [`oracle::Pass`].
//! - [`padded`]: the per-row oracle of padded batches (each row run alone).
//! - [`activation`]: f64 references of the activations and the ULP measure.
//! - [`convert`]: widening to f64 and rounding back.
//! - [`memory`]: whether the kernel refuses an allocation outright.
//!
//! Fuzz-only helpers (`arbitrary` pickers, C API arguments) stay in `fuzz/src/lib.rs`, so the
//! tests never compile `arbitrary`. Never use this crate from `src/` unit tests: it links its
//! own copy of `fused_rnn`, whose types are not the unit-test build's.

pub mod activation;
pub mod convert;
pub mod memory;
pub mod oracle;
pub mod padded;
pub mod random;
pub mod tolerance;
