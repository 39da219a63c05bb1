//! How a pass is split over threads: the plan, decided once per call ([`plan`]); the row
//! split ([`rows`]); the hidden-unit split of small-batch inference ([`columns`]) and its
//! claims primitive ([`claims`], the one `unsafe` outside `kernels/`); the streaming step's
//! worker threads ([`stream_workers`]); and the pool the layer owns ([`pool`]).

pub(crate) mod claims;
pub(crate) mod columns;
pub(crate) mod plan;
pub(crate) mod pool;
pub(crate) mod rows;
pub(crate) mod stream_workers;
