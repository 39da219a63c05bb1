//! REGRESSION (found while writing the api_misuse fuzz target): `Workspace::new` panicked with
//! "capacity overflow" when the workspace's element count fit in `usize` but its size in bytes
//! exceeded `isize::MAX`. Fixed: sizes are checked in bytes and allocations use `try_reserve`,
//! so unusable dims give `Err`, never a panic or an abort.

use fused_rnn::{CellKind, Dims, Error, Mode, RnnActivation, Workspace};

#[test]
fn workspace_whose_bytes_overflow_is_an_error_not_a_panic() {
    let cell = CellKind::Rnn(RnnActivation::Tanh);
    // The gates alone are T·B·H = 2^62 elements: that fits usize, but 2^64 bytes of f32 do not
    // fit isize. (The original input had H = 2^31 and B = 1, when the workspace also held the
    // packed H² weights; those now live in the layer.)
    let d = Dims {
        seq_len: 1,
        batch: 1 << 31,
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
