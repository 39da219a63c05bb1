//! Passes over time: forward and BPTT over a fixed batch, in either direction, and batches
//! whose rows have lengths of their own (padded), run as segments of fixed batches.

pub(crate) mod backward;
pub(crate) mod forward;
pub mod padded;

use crate::shape::Direction;

/// The time axis of a pass of `steps` steps in `direction`: which time step the recurrence
/// runs `tau`-th, and where a training pass keeps each state. States sit in time order,
/// `T + 1` slots: going forward, step `t` reads slot `t` and writes slot `t + 1`; in reverse it
/// reads slot `t + 1` and writes slot `t`. So the states that backward pairs with the gate
/// gradients of steps `0..T` (`h_{prev}` of each step) are `T` consecutive slots in both
/// directions, and one GEMM over all rows gives `dW_hh` either way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeAxis {
    steps: usize,
    direction: Direction,
}

impl TimeAxis {
    pub(crate) fn new(steps: usize, direction: Direction) -> Self {
        TimeAxis { steps, direction }
    }
    /// Whether the recurrence runs from the last step to the first.
    pub(crate) fn reversed(self) -> bool {
        self.direction == Direction::Reverse
    }
    /// The time step the recurrence runs `tau`-th.
    pub(crate) fn at(self, tau: usize) -> usize {
        match self.direction {
            Direction::Forward => tau,
            Direction::Reverse => self.steps - 1 - tau,
        }
    }
    /// The slot of the state step `t` reads.
    pub(crate) fn prev_slot(self, t: usize) -> usize {
        match self.direction {
            Direction::Forward => t,
            Direction::Reverse => t + 1,
        }
    }
    /// The slot of the state step `t` writes.
    pub(crate) fn out_slot(self, t: usize) -> usize {
        match self.direction {
            Direction::Forward => t + 1,
            Direction::Reverse => t,
        }
    }
    /// The slot of the initial state.
    pub(crate) fn first_slot(self) -> usize {
        self.prev_slot(self.at(0))
    }
    /// The slot of the final state.
    pub(crate) fn last_slot(self) -> usize {
        self.out_slot(self.last_step())
    }
    /// The time step the recurrence runs last (its output is the final state).
    pub(crate) fn last_step(self) -> usize {
        self.at(self.steps - 1)
    }
}

/// Element `read` of `v` to read and element `write` to write (`read != write`).
pub(crate) fn read_write<'a, T>(
    v: &'a mut [&mut [T]],
    read: usize,
    write: usize,
) -> (&'a [T], &'a mut [T]) {
    if read < write {
        let (a, b) = v.split_at_mut(write);
        (&*a[read], &mut *b[0])
    } else {
        let (a, b) = v.split_at_mut(read);
        (&*b[0], &mut *a[write])
    }
}

/// Reverses the order of the `step_len`-element blocks of `buf` in place.
pub(crate) fn reverse_steps<F>(buf: &mut [F], step_len: usize) {
    let steps = buf.len() / step_len.max(1);
    for k in 0..steps / 2 {
        let (lo, hi) = buf.split_at_mut((steps - 1 - k) * step_len);
        lo[k * step_len..(k + 1) * step_len].swap_with_slice(&mut hi[..step_len]);
    }
}
