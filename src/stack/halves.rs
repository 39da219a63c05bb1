//! How a stack's buffers split by direction: `[T·B, D·H]` outputs into one direction's
//! `[T·B, H]` half and back, `[L·D, B, H]` states into the slices of two passes.

/// Writes one direction's `half [T·B, H]` into columns `di·H..(di+1)·H` of `out [T·B, D·H]`.
pub(super) fn put_half<F: Copy>(out: &mut [F], half: &[F], h: usize, d: usize, di: usize) {
    for (o, s) in out.chunks_exact_mut(d * h).zip(half.chunks_exact(h)) {
        o[di * h..(di + 1) * h].copy_from_slice(s);
    }
}

/// Reads columns `di·H..(di+1)·H` of `src [T·B, D·H]` into `half [T·B, H]`.
pub(super) fn take_half<F: Copy>(src: &[F], half: &mut [F], h: usize, d: usize, di: usize) {
    for (s, o) in src.chunks_exact(d * h).zip(half.chunks_exact_mut(h)) {
        o.copy_from_slice(&s[di * h..(di + 1) * h]);
    }
}

/// The state slices `[B, H]` (`bh` elements) of passes `n0` and `n0 + 1` in `h [L·D, B, H]` and
/// `c`, as two disjoint pairs `(h, c)`; the second pair is empty when `d = 1`.
#[allow(clippy::type_complexity)]
pub(super) fn pair_of_states<'a, F>(
    h: Option<&'a mut [F]>,
    c: Option<&'a mut [F]>,
    n0: usize,
    bh: usize,
    d: usize,
) -> (
    (Option<&'a mut [F]>, Option<&'a mut [F]>),
    (Option<&'a mut [F]>, Option<&'a mut [F]>),
) {
    let split = |v: Option<&'a mut [F]>| -> (Option<&'a mut [F]>, Option<&'a mut [F]>) {
        match v {
            None => (None, None),
            Some(v) => {
                let (a, b) = v[n0 * bh..(n0 + d) * bh].split_at_mut(bh);
                (Some(a), (d == 2).then_some(b))
            }
        }
    };
    let (hf, hr) = split(h);
    let (cf, cr) = split(c);
    ((hf, cf), (hr, cr))
}
