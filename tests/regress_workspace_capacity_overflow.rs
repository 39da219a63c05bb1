//! REGRESSION (found while writing the api_misuse fuzz target; FAILS until fixed):
//! `Workspace::new` panics with "capacity overflow" when the workspace's element count fits in
//! `usize` but its size in bytes exceeds `isize::MAX`. `Dims::validate` and the layout check
//! element counts only. The crate promises `Err` for unusable dims, never a panic.

use fused_rnn::{CellKind, Dims, Error, Mode, RnnActivation, Workspace};

#[test]
fn workspace_whose_bytes_overflow_is_an_error_not_a_panic() {
    let cell = CellKind::Rnn(RnnActivation::Tanh);
    // W_hhᵀ alone is H² = 2^62 elements: fits usize, but 2^64 bytes of f32 do not fit isize.
    let d = Dims {
        seq_len: 1,
        batch: 1,
        input: 1,
        hidden: 1 << 31,
    };
    let r = std::panic::catch_unwind(|| {
        Workspace::<f32>::new(cell, d, Mode::Inference).map(|w| w.bytes())
    });
    match r {
        Ok(Err(Error::SizeOverflow { .. })) => {}
        Ok(other) => panic!("expected SizeOverflow, got {other:?}"),
        Err(_) => panic!("Workspace::new panicked instead of returning Err(SizeOverflow)"),
    }
}
