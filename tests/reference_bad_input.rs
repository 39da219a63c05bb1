//! The reference refuses bad input with an error, never a panic: wrong lengths of every buffer,
//! zero dimensions, overflowing dimensions, and cell-state buffers given to a cell without one.

use fused_rnn::reference;
use fused_rnn::{CellKind, Dims, Error, LayerWeights};
use testkit::oracle::{reference_backward, reference_forward};
use testkit::random::{RandomCase, dims};

/// Every buffer of a call, owned, so that one of them can be swapped for a bad one.
type Call = RandomCase<f64>;

fn new_call(cell: CellKind, d: Dims) -> Call {
    RandomCase::new(cell, d, 3)
}

/// The buffers whose length is checked, with the name the error must carry and whether
/// `forward` reads it (the upstream gradients are `backward`'s only).
const BUFFERS: [(&str, bool); 10] = [
    ("weight_ih [G*H, I]", true),
    ("weight_hh [G*H, H]", true),
    ("bias_ih [G*H]", true),
    ("bias_hh [G*H]", true),
    ("x [T, B, I]", true),
    ("h0 [B, H]", true),
    ("c0 [B, H]", true),
    ("dy [T, B, H]", false),
    ("dh_n [B, H]", false),
    ("dc_n [B, H]", false),
];

fn buffer_mut<'a>(call: &'a mut Call, what: &str) -> Option<&'a mut Vec<f64>> {
    match what {
        "weight_ih [G*H, I]" => Some(&mut call.weight_ih),
        "weight_hh [G*H, H]" => Some(&mut call.weight_hh),
        "bias_ih [G*H]" => Some(&mut call.bias_ih),
        "bias_hh [G*H]" => Some(&mut call.bias_hh),
        "x [T, B, I]" => Some(&mut call.x),
        "h0 [B, H]" => call.h0.as_mut(),
        "c0 [B, H]" => call.c0.as_mut(),
        "dy [T, B, H]" => call.dy.as_mut(),
        "dh_n [B, H]" => call.dh_n.as_mut(),
        "dc_n [B, H]" => call.dc_n.as_mut(),
        _ => unreachable!("unknown buffer {what}"),
    }
}

#[test]
fn good_input_is_accepted() {
    for &cell in &CellKind::ALL {
        let call = new_call(cell, dims(3, 2, 4, 5));
        reference_forward(&call).unwrap();
        reference_backward(&call).unwrap();
    }
}

#[test]
fn wrong_length_of_every_buffer_is_an_error() {
    let d = dims(3, 2, 4, 5);
    for &cell in &CellKind::ALL {
        let good = new_call(cell, d);
        for (what, in_forward) in BUFFERS {
            let mut probe = good.clone();
            let Some(len) = buffer_mut(&mut probe, what).map(|b| b.len()) else {
                // c0 / dc_n for a cell without a cell state: covered below.
                assert!(!cell.has_cell_state(), "{}: {what} missing", cell.name());
                continue;
            };
            for bad_len in [0, len - 1, len + 1, 2 * len] {
                let mut call = good.clone();
                buffer_mut(&mut call, what)
                    .expect("present")
                    .resize(bad_len, 0.5);
                let want = Error::BufferLength {
                    what,
                    expected: len,
                    got: bad_len,
                };
                let ctx = format!("{}: {what} of length {bad_len}", cell.name());
                if in_forward {
                    assert_eq!(
                        reference_forward(&call).err(),
                        Some(want.clone()),
                        "forward, {ctx}"
                    );
                } else {
                    reference_forward(&call).expect("forward does not read upstream gradients");
                }
                assert_eq!(
                    reference_backward(&call).err(),
                    Some(want),
                    "backward, {ctx}"
                );
            }
        }
    }
}

#[test]
fn zero_dims_are_an_error() {
    for &cell in &CellKind::ALL {
        for (what, d) in [
            ("seq_len", dims(0, 2, 3, 4)),
            ("batch", dims(2, 0, 3, 4)),
            ("input", dims(2, 2, 0, 4)),
            ("hidden", dims(2, 2, 3, 0)),
        ] {
            // Buffers of the lengths these dims imply (some of them empty).
            let call = new_call(cell, d);
            let want = Some(Error::ZeroDim { what });
            assert_eq!(
                reference_forward(&call).err(),
                want,
                "{} forward {d:?}",
                cell.name()
            );
            assert_eq!(
                reference_backward(&call).err(),
                want,
                "{} backward {d:?}",
                cell.name()
            );
        }
    }
}

#[test]
fn overflowing_dims_are_an_error() {
    let w = vec![0.0f64; 4];
    let weights = LayerWeights {
        weight_ih: &w,
        weight_hh: &w,
        bias_ih: &w,
        bias_hh: &w,
    };
    let cases = [
        dims(usize::MAX / 2, 3, 1, 1),
        dims(usize::MAX, 1, 1, 1),
        dims(1, 1, usize::MAX, 1),
        dims(1, 1, 1, usize::MAX),
    ];
    for (&cell, huge) in CellKind::ALL
        .iter()
        .flat_map(|c| cases.iter().map(move |d| (c, *d)))
    {
        let r = reference::forward(cell, huge, &weights, &[], None, None);
        assert!(
            matches!(r, Err(Error::SizeOverflow { .. })),
            "{} {huge:?}: {r:?}",
            cell.name()
        );
        let r = reference::backward(cell, huge, &weights, &[], None, None, None, None, None);
        assert!(
            matches!(r, Err(Error::SizeOverflow { .. })),
            "{} {huge:?}: {:?}",
            cell.name(),
            r.err()
        );
    }
}

/// A sequence whose trace does not fit in memory is [`Error::AllocationFailed`], not an abort:
/// T = 2^23, B = I = 1, H = 2048 in f32 keeps `x` (32 MiB) and the weights (at most 64 MiB)
/// small while the states `[T+1, B, H]` are 64 GiB each and an LSTM's gates 256 GiB. Run only
/// where the kernel refuses each of those by itself (see `kernel_refuses_allocation`), so that
/// no order of allocation can be granted memory and write it. (The reviewer's T = 2^21 has
/// 16 GiB states, which a 24 GiB machine grants as untouched address space; the reference
/// reserves every buffer of its trace before it writes any, so that case is an `Err` too.)
#[test]
fn a_trace_larger_than_memory_is_an_error() {
    let d = dims(1 << 23, 1, 1, 2048);
    let state_bytes = (d.seq_len + 1) * d.hidden * 4;
    if !testkit::memory::kernel_refuses_allocation(state_bytes) {
        eprintln!("skipped: this kernel might grant {state_bytes} bytes");
        return;
    }
    let x = vec![0.0f32; d.x_len()];
    for &cell in &CellKind::ALL {
        let gh = cell.gates() * d.hidden;
        let (w_ih, w_hh, b) = (
            vec![0.0f32; gh],
            vec![0.0f32; gh * d.hidden],
            vec![0.0f32; gh],
        );
        let w = LayerWeights {
            weight_ih: &w_ih,
            weight_hh: &w_hh,
            bias_ih: &b,
            bias_hh: &b,
        };
        let r = reference::forward(cell, d, &w, &x, None, None);
        assert!(
            matches!(r, Err(Error::AllocationFailed { .. })),
            "{} forward: {:?}",
            cell.name(),
            r.err()
        );
        let r = reference::backward(cell, d, &w, &x, None, None, None, None, None);
        assert!(
            matches!(r, Err(Error::AllocationFailed { .. })),
            "{} backward: {:?}",
            cell.name(),
            r.err()
        );
    }
}

#[test]
fn cell_state_buffers_for_cells_without_one_are_an_error() {
    let d = dims(3, 2, 4, 5);
    for &cell in &CellKind::ALL {
        if cell.has_cell_state() {
            continue;
        }
        let good = new_call(cell, d);
        let state = vec![0.0; d.state_len()];

        let mut call = good.clone();
        call.c0 = Some(state.clone());
        for r in [
            reference_forward(&call).err(),
            reference_backward(&call).err(),
        ] {
            assert!(
                matches!(
                    r,
                    Some(Error::UnexpectedBuffer {
                        what: "c0 [B, H]",
                        ..
                    })
                ),
                "{}: c0: {r:?}",
                cell.name()
            );
        }

        let mut call = good.clone();
        call.dc_n = Some(state);
        reference_forward(&call).expect("forward does not read dc_n");
        let r = reference_backward(&call).err();
        assert!(
            matches!(
                r,
                Some(Error::UnexpectedBuffer {
                    what: "dc_n [B, H]",
                    ..
                })
            ),
            "{}: dc_n: {r:?}",
            cell.name()
        );
    }
}
