//! The per-step GEMM `C (+)= A · W` for the recurrent loop, written once over [`SimdOps`].
//!
//! Shapes inside the time loop are small in M (the batch) and reuse the same weights every
//! step; matrixmultiply would re-pack W and allocate a packing buffer on every call. This
//! kernel reads W in place (row-major `[K, N]`: the forward passes `W_hhᵀ`, packed once per
//! call; the backward passes `W_hh` itself), allocates nothing, and is register-blocked
//! `MR = 4` rows × 2 vectors of columns: per `k`, two loads of W feed `2·MR` multiply-adds.
//! Column tails narrower than a vector run the same code on zero-padded copies.

use super::simd::{MAX_LANES, SimdOps};

/// A row-major matrix operand: element `(r, c)` at `data[r * ld + c]`.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a, E> {
    /// The elements.
    pub data: &'a [E],
    /// Row stride.
    pub ld: usize,
}

/// Whether the GEMM adds to C or overwrites it (C is then not read, so it may hold NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `C = A · W`.
    No,
    /// `C += A · W`.
    Yes,
}

/// `C[m, n] (+)= A[m, k] · W[k, n]`. `c` is row-major with row stride `ldc`.
///
/// Panics (a bug in the caller, never user input) if an operand is too short for its shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_gemm<S: SimdOps>(
    s: S,
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_, S::Elem>,
    w: Operand<'_, S::Elem>,
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.data.len() >= (m - 1) * a.ld + k, "step_gemm: A too short");
    assert!(
        k == 0 || w.data.len() >= (k - 1) * w.ld + n,
        "step_gemm: W too short"
    );
    assert!(c.len() >= (m - 1) * ldc + n, "step_gemm: C too short");
    let mut i0 = 0;
    while i0 < m {
        let mr = (m - i0).min(4);
        match mr {
            4 => row_block::<S, 4>(s, i0, k, n, a, w, c, ldc, acc),
            3 => row_block::<S, 3>(s, i0, k, n, a, w, c, ldc, acc),
            2 => row_block::<S, 2>(s, i0, k, n, a, w, c, ldc, acc),
            _ => row_block::<S, 1>(s, i0, k, n, a, w, c, ldc, acc),
        }
        i0 += mr;
    }
}

/// Rows `i0 .. i0 + MR` of C, every column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_block<S: SimdOps, const MR: usize>(
    s: S,
    i0: usize,
    k: usize,
    n: usize,
    a: Operand<'_, S::Elem>,
    w: Operand<'_, S::Elem>,
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    let l = S::LANES;
    let a_rows: [&[S::Elem]; MR] =
        core::array::from_fn(|r| &a.data[(i0 + r) * a.ld..(i0 + r) * a.ld + k]);
    let mut j = 0;
    // Two vectors of columns at a time.
    while j + 2 * l <= n {
        let mut v: [[S::V; 2]; MR] = core::array::from_fn(|r| match acc {
            Accumulate::Yes => {
                let row = &c[(i0 + r) * ldc + j..];
                [s.load(row), s.load(&row[l..])]
            }
            Accumulate::No => [s.splat(S::Elem::default()); 2],
        });
        for p in 0..k {
            let wr = &w.data[p * w.ld + j..p * w.ld + j + 2 * l];
            let w0 = s.load(wr);
            let w1 = s.load(&wr[l..]);
            for (vr, ar) in v.iter_mut().zip(&a_rows) {
                let ar = s.splat(ar[p]);
                vr[0] = s.mul_add(ar, w0, vr[0]);
                vr[1] = s.mul_add(ar, w1, vr[1]);
            }
        }
        for (r, vr) in v.iter().enumerate() {
            let row = &mut c[(i0 + r) * ldc + j..];
            s.store(row, vr[0]);
            s.store(&mut row[l..], vr[1]);
        }
        j += 2 * l;
    }
    // One vector.
    while j + l <= n {
        let mut v: [S::V; MR] = core::array::from_fn(|r| match acc {
            Accumulate::Yes => s.load(&c[(i0 + r) * ldc + j..]),
            Accumulate::No => s.splat(S::Elem::default()),
        });
        for p in 0..k {
            let w0 = s.load(&w.data[p * w.ld + j..p * w.ld + j + l]);
            for (vr, ar) in v.iter_mut().zip(&a_rows) {
                *vr = s.mul_add(s.splat(ar[p]), w0, *vr);
            }
        }
        for (r, vr) in v.iter().enumerate() {
            s.store(&mut c[(i0 + r) * ldc + j..], *vr);
        }
        j += l;
    }
    // Fewer columns than a vector: the same arithmetic on zero-padded copies.
    let rem = n - j;
    if rem > 0 {
        let mut v: [S::V; MR] = core::array::from_fn(|r| match acc {
            Accumulate::Yes => {
                let mut buf = [S::Elem::default(); MAX_LANES];
                buf[..rem].copy_from_slice(&c[(i0 + r) * ldc + j..(i0 + r) * ldc + n]);
                s.load(&buf)
            }
            Accumulate::No => s.splat(S::Elem::default()),
        });
        let mut wbuf = [S::Elem::default(); MAX_LANES];
        for p in 0..k {
            wbuf[..rem].copy_from_slice(&w.data[p * w.ld + j..p * w.ld + n]);
            let w0 = s.load(&wbuf);
            for (vr, ar) in v.iter_mut().zip(&a_rows) {
                *vr = s.mul_add(s.splat(ar[p]), w0, *vr);
            }
        }
        for (r, vr) in v.iter().enumerate() {
            let mut buf = [S::Elem::default(); MAX_LANES];
            s.store(&mut buf, *vr);
            c[(i0 + r) * ldc + j..(i0 + r) * ldc + n].copy_from_slice(&buf[..rem]);
        }
    }
}
