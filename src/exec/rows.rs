//! The row split: a pass's batch rows cut into blocks that each run the whole sequence on
//! their own thread (rows are independent, so there is no synchronisation per step).

use crate::error::{Error, Result};

/// Row ranges `[start, end)` of `b` rows in up to `shards` blocks (multiples of four rows,
/// the GEMM micro-tile, where possible).
pub(crate) fn row_ranges(b: usize, shards: usize) -> Vec<(usize, usize)> {
    let shards = shards.clamp(1, b.max(1));
    let mut out = Vec::with_capacity(shards);
    let mut start = 0;
    for k in 0..shards {
        let mut end = b * (k + 1) / shards;
        if k + 1 < shards && end - start >= 4 {
            end -= (end - start) % 4;
        }
        if end > start {
            out.push((start, end));
        }
        start = end;
    }
    out
}

/// `buf` holds `steps` blocks of `B` rows of `row_len`; returns, per row range, that range's
/// rows of every step as separate slices (`[shard][step]`). The slices are disjoint, so the
/// shards can run on different threads.
pub(crate) fn row_pieces<'a, F>(
    buf: &'a mut [F],
    steps: usize,
    row_len: usize,
    ranges: &[(usize, usize)],
) -> Result<Vec<Vec<&'a mut [F]>>> {
    let mut out = step_lists(ranges.len(), steps)?;
    if steps == 0 {
        return Ok(out);
    }
    let b = ranges.last().map_or(0, |r| r.1);
    for step in buf.chunks_exact_mut(b * row_len).take(steps) {
        let mut rest = step;
        for (k, &(s, e)) in ranges.iter().enumerate() {
            let (piece, tail) = rest.split_at_mut((e - s) * row_len);
            out[k].push(piece);
            rest = tail;
        }
    }
    Ok(out)
}

/// Read-only [`row_pieces`].
pub(crate) fn row_pieces_ref<'a, F>(
    buf: &'a [F],
    steps: usize,
    row_len: usize,
    ranges: &[(usize, usize)],
) -> Result<Vec<Vec<&'a [F]>>> {
    let mut out = step_lists(ranges.len(), steps)?;
    if steps == 0 {
        return Ok(out);
    }
    let b = ranges.last().map_or(0, |r| r.1);
    for step in buf.chunks_exact(b * row_len).take(steps) {
        let mut rest = step;
        for (k, &(s, e)) in ranges.iter().enumerate() {
            let (piece, tail) = rest.split_at((e - s) * row_len);
            out[k].push(piece);
            rest = tail;
        }
    }
    Ok(out)
}

/// `shards` empty lists with room for `steps` entries each, allocated fallibly: a pass's
/// bookkeeping grows with `T` (one slice per step and buffer), so a `T` the workspace could
/// hold may still be refused here, with an error rather than an abort.
fn step_lists<T>(shards: usize, steps: usize) -> Result<Vec<Vec<T>>> {
    let bytes = steps.saturating_mul(core::mem::size_of::<T>());
    let mut out = Vec::new();
    out.try_reserve_exact(shards)
        .map_err(|_| Error::AllocationFailed {
            what: "per-step slices",
            bytes,
        })?;
    for _ in 0..shards {
        let mut v = Vec::new();
        v.try_reserve_exact(steps)
            .map_err(|_| Error::AllocationFailed {
                what: "per-step slices",
                bytes,
            })?;
        out.push(v);
    }
    Ok(out)
}

/// Runs `f` on every job, the first on the calling thread and the others as tasks of the
/// current rayon pool (one parallel region per pass, no per-step synchronisation).
pub(crate) fn run_parallel<J: Send>(mut jobs: Vec<J>, f: &(dyn Fn(J) + Sync)) {
    let Some(first) = (!jobs.is_empty()).then(|| jobs.remove(0)) else {
        return;
    };
    if jobs.is_empty() {
        f(first);
        return;
    }
    rayon::scope(|s| {
        for job in jobs {
            s.spawn(move |_| f(job));
        }
        f(first);
    });
}
