//! Passes over time: forward and BPTT over a fixed batch, and batches whose rows have lengths
//! of their own (padded), run as segments of fixed batches.

pub(crate) mod backward;
pub(crate) mod forward;
pub mod padded;
