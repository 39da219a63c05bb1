//! The GEMMs over all `T·B` rows at once (before and after the time loop) on the packed step
//! GEMM kernel: the input projection `X · W_ihᵀ`, backward's `dX = dG · W_ih`, and the weight
//! gradients `dW = dGᵀ · [X | H_{t-1}]`.
//!
//! They replaced matrixmultiply here because they measured faster on the layer's shapes (one
//! thread, back to back in one session): the input projection 108 vs 93 GFLOP/s at
//! 2048×512×2048, and an LSTM backward at T=128 B=32 I=H=512 (dX and the weight gradients
//! here instead of matrixmultiply) 388 → 339 ms, the whole training pass 560 → 514 ms.
//!
//! Every C element is one multiply-add chain over `k` in order, whatever the row blocking,
//! the `k` chunking (a chunk resumes the chain from C) or the thread split (by rows of C
//! only, never by `k`): results are bit-identical for every thread count.

use crate::float::Float;
use crate::kernels::isa::IsaToken;
use crate::kernels::step_gemm::{
    Accumulate, Operand, OperandTiles, PackedLayout, PackedRef, TILE_ROWS,
};

/// Rows of A per block of [`gemm_packed_rows`]: the block (48 KiB of f32 with a `k` chunk of
/// [`ROWS_K_CHUNK`]) stays in L2 while every panel passes over it; a multiple of the 6-row
/// micro-tile.
const ROW_BLOCK: usize = 24;

/// `k` per pass over C in [`gemm_packed_rows`]: a panel's chunk is `512 × 16` f32 (32 KiB).
/// All of `k` at I = 512, as the streaming step; 256 measured 2% slower there.
const ROWS_K_CHUNK: usize = 512;

/// `k` per pass over C in [`weight_grad`]: a panel's chunk is `256 × 16` f32 (16 KiB), half
/// of L1 (512 measured the same).
const K_CHUNK: usize = 256;

/// Rows of C (columns of A) per block of [`weight_grad`]: A's block `[K_CHUNK, M_BLOCK]` (120
/// KiB of f32) stays in L2 while every panel of B passes over it.
const M_BLOCK: usize = 120;

/// `C[rows, n] = A[rows, k] · W[k, n]` (`A` row-major with row stride `lda`, `W` packed, C
/// row-major with row stride `n`, the selected columns of W), row blocks spread over the
/// current rayon pool when `shards > 1` (the caller is inside the layer's pool then).
///
/// `k` is walked in chunks of [`K_CHUNK`], each resuming the sums in C, so the result is the
/// same as one chain over `k`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed_rows<F: Float>(
    isa: IsaToken,
    shards: usize,
    rows: usize,
    a: &[F],
    lda: usize,
    k: usize,
    w: PackedRef<'_, F>,
    c: &mut [F],
) {
    use rayon::prelude::*;
    let ldc = w.groups * (w.u1 - w.u0);
    if rows == 0 || ldc == 0 {
        return;
    }
    let block = |(r, cb): (usize, &mut [F])| {
        let m = cb.len() / ldc;
        let ab = &a[r * ROW_BLOCK * lda..];
        for k0 in (0..k).step_by(ROWS_K_CHUNK) {
            let kc = (k - k0).min(ROWS_K_CHUNK);
            let op = Operand {
                data: &ab[k0..],
                ld: lda,
            };
            let wk = PackedRef { k0: w.k0 + k0, ..w };
            let acc = if k0 == 0 {
                Accumulate::No
            } else {
                Accumulate::Yes
            };
            F::step_gemm(isa, m, kc, op, wk, cb, ldc, acc);
        }
    };
    let c = &mut c[..rows * ldc];
    if shards > 1 {
        c.par_chunks_mut(ROW_BLOCK * ldc)
            .enumerate()
            .for_each(block);
    } else {
        c.chunks_mut(ROW_BLOCK * ldc).enumerate().for_each(block);
    }
}

/// One product of a [`weight_grad`] call: `C[m1 - m0, n] (+)= A[:, m0..m1]ᵀ · B[k, n]`.
pub(crate) struct GradTerm<'a, F> {
    /// `B [k, n]`, row-major with row stride `ldb`.
    pub b: &'a [F],
    /// Row stride of B.
    pub ldb: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The columns of A this product uses (the rows of C).
    pub m0: usize,
    /// One past the last.
    pub m1: usize,
    /// `C [m1 - m0, n]`, row-major.
    pub c: &'a mut [F],
}

impl<'a, F> GradTerm<'a, F> {
    /// A term whose B is contiguous (`ldb = n`).
    pub(crate) fn new(b: &'a [F], n: usize, m0: usize, m1: usize, c: &'a mut [F]) -> Self {
        GradTerm {
            b,
            ldb: n,
            n,
            m0,
            m1,
            c,
        }
    }
}

/// `C_j (+)= A[:, m0_j..m1_j]ᵀ · B_j` for every term `j`, with `A [k, m]` row-major (row
/// stride `lda`): the weight gradients `dW = dGᵀ · X`, `dGᵀ · H_{t-1}`, which share `A = dG`.
///
/// A's blocks are packed transposed (see [`OperandTiles`]) and serve every term over the same
/// columns; each term's B is packed into panels per `k` chunk and serves every block of A.
/// Each term's C rows are split evenly over `shards` threads (so each C element is still one
/// chain over `k`), each thread packing B for itself into its part of `scratch`, which must
/// hold `shards ·` [`weight_grad_scratch_len`] elements for these terms' widths (a caller's
/// bug otherwise: panics). `acc` says whether the first chunk adds to C or overwrites it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad<F: Float>(
    isa: IsaToken,
    shards: usize,
    a: &[F],
    lda: usize,
    k: usize,
    terms: Vec<GradTerm<'_, F>>,
    acc: Accumulate,
    scratch: &mut [F],
) {
    if k == 0 {
        if acc == Accumulate::No {
            for t in terms {
                t.c.fill(F::ZERO);
            }
        }
        return;
    }
    // Every term's rows split evenly over the threads, at whole micro-tiles (terms over
    // different column ranges, as the GRU's, would otherwise load one thread more: a split
    // of A's columns gave the GRU's threads 60% and 40%).
    // Scratch per thread for every term: a thread's job holds a subset of them (a short
    // term can leave a thread out while another thread has it).
    let widths: Vec<usize> = terms.iter().map(|t| t.n).collect();
    let per_thread = weight_grad_scratch_len::<F>(k, &widths);
    let most = terms.iter().map(|t| t.m1 - t.m0).max().unwrap_or(0);
    let shards = shards.clamp(1, most.div_ceil(6).max(1));
    let mut jobs: Vec<Vec<GradTerm<'_, F>>> = (0..shards).map(|_| Vec::new()).collect();
    for t in terms {
        let tiles = (t.m1 - t.m0).div_ceil(6);
        let bound = |s: usize| (t.m0 + tiles * s / shards * 6).min(t.m1);
        let mut rest = t.c;
        for (s, job) in jobs.iter_mut().enumerate() {
            let (lo, hi) = (bound(s), bound(s + 1));
            if lo >= hi {
                continue;
            }
            let (piece, tail) = rest.split_at_mut((hi - lo) * t.n);
            rest = tail;
            job.push(GradTerm {
                b: t.b,
                ldb: t.ldb,
                n: t.n,
                m0: lo,
                m1: hi,
                c: piece,
            });
        }
    }
    assert!(
        scratch.len() >= shards * per_thread,
        "weight_grad: scratch for {shards} threads of {per_thread}, got {}",
        scratch.len()
    );
    let run = |(terms, scratch): (Vec<GradTerm<'_, F>>, &mut [F])| {
        weight_grad_one(isa, a, lda, k, terms, acc, scratch)
    };
    let mut jobs = jobs.into_iter().zip(scratch.chunks_mut(per_thread));
    let first = jobs.next().expect("at least one thread");
    let rest: Vec<_> = jobs.filter(|(j, _)| !j.is_empty()).collect();
    if rest.is_empty() {
        run(first);
    } else {
        rayon::scope(|s| {
            for job in rest {
                s.spawn(move |_| run(job));
            }
            run(first);
        });
    }
}

/// Elements of scratch one thread of [`weight_grad`] needs over `k` rows, for terms whose B
/// has `widths` columns: a packed `k` chunk of each B and a block of A, each with a line's
/// slack to start on a line (as the packed weights; a 512-bit load must not split lines).
///
/// The scratch lives in the workspace, so that backward allocates nothing after its first
/// call: fresh buffers per call cost page faults on every call (1-2% of an RNN backward in
/// `perf`, kernel time clearing and mapping pages).
pub(crate) fn weight_grad_scratch_len<F: Float>(k: usize, widths: &[usize]) -> usize {
    let kc = K_CHUNK.min(k);
    let slack = 64 / core::mem::size_of::<F>();
    let b: usize = widths
        .iter()
        .map(|&n| b_chunk_layout::<F>(kc, n).len() + slack)
        .sum();
    b + kc * M_BLOCK + slack
}

/// The layout of one `k` chunk of B (`kc` rows of `n` columns) in panels.
fn b_chunk_layout<F: Float>(kc: usize, n: usize) -> PackedLayout {
    PackedLayout {
        k: kc,
        groups: 1,
        group_width: n,
        nr: F::PANEL_WIDTH,
    }
}

/// Splits `len` elements starting on a 64-byte line off the front of `buf` (`buf` has a
/// line's slack for it; see [`weight_grad_scratch_len`]).
fn take_aligned<'a, F>(buf: &mut &'a mut [F], len: usize) -> &'a mut [F] {
    let size = core::mem::size_of::<F>();
    let skip = (64 - buf.as_ptr().addr() % 64) % 64 / size;
    let (_, rest) = core::mem::take(buf).split_at_mut(skip);
    let (piece, rest) = rest.split_at_mut(len);
    *buf = rest;
    piece
}

/// [`weight_grad`] on one thread, for terms whose row ranges are this thread's.
fn weight_grad_one<F: Float>(
    isa: IsaToken,
    a: &[F],
    lda: usize,
    k: usize,
    mut terms: Vec<GradTerm<'_, F>>,
    acc: Accumulate,
    mut scratch: &mut [F],
) {
    let Some(m_lo) = terms.iter().map(|t| t.m0).min() else {
        return;
    };
    let m_hi = terms.iter().map(|t| t.m1).max().unwrap_or(m_lo);
    let layouts: Vec<PackedLayout> = terms
        .iter()
        .map(|t| b_chunk_layout::<F>(K_CHUNK.min(k), t.n))
        .collect();
    let mut packed: Vec<&mut [F]> = layouts
        .iter()
        .map(|l| take_aligned(&mut scratch, l.len()))
        .collect();
    // A's block, columns `lo..hi` of rows `k0..k0 + kc`, packed as an [`OperandTiles`]: each
    // micro-tile then reads one contiguous run (read in place, A's row stride of 8 KiB for
    // G*H = 2048 would put every `k` of a tile in the same cache set).
    let ablk = take_aligned(&mut scratch, K_CHUNK.min(k) * M_BLOCK);
    for k0 in (0..k).step_by(K_CHUNK) {
        let kc = (k - k0).min(K_CHUNK);
        for ((t, lay), buf) in terms.iter().zip(&layouts).zip(&mut packed) {
            // Rows k0..k0 + kc of B (a short last chunk as a layout with `k = kc`).
            let lay = PackedLayout { k: kc, ..*lay };
            pack_strips(&t.b[k0 * t.ldb..], t.ldb, kc, t.n, lay.nr, buf);
        }
        let chunk_acc = if k0 == 0 { acc } else { Accumulate::Yes };
        for mb in (m_lo..m_hi).step_by(M_BLOCK) {
            let me = (mb + M_BLOCK).min(m_hi);
            // The columns of A in `ablk` (terms over the same columns share one packing).
            let mut have = (0, 0);
            for ((t, lay), buf) in terms.iter_mut().zip(&layouts).zip(&packed) {
                let (lo, hi) = (mb.max(t.m0), me.min(t.m1));
                if lo >= hi {
                    continue;
                }
                if have != (lo, hi) {
                    pack_strips(&a[k0 * lda + lo..], lda, kc, hi - lo, TILE_ROWS, ablk);
                    have = (lo, hi);
                }
                let lay = PackedLayout { k: kc, ..*lay };
                let op = OperandTiles { data: ablk, k: kc };
                let c = &mut t.c[(lo - t.m0) * t.n..(hi - t.m0) * t.n];
                let w = PackedRef::all(&buf[..lay.len()], lay);
                F::step_gemm_tiles(isa, hi - lo, kc, op, w, c, t.n, chunk_acc);
            }
        }
    }
}

/// Packs `M[0..k, 0..n]` (row-major, row stride `ld`) into `out` as strips of `width`
/// columns, each strip `k × width` row-major and the last one zero-padded: B's panels
/// (`width` = the panel width, as [`PackedLayout::pack`] for one gate block) and A's
/// [`OperandTiles`] groups (`width` = [`TILE_ROWS`]).
///
/// B (`x`, `h`: megabytes, read from L3 or memory) is read row by row; A's block (a few
/// hundred columns of the gate gradients) strip by strip, which measured the same or slightly
/// better there (RNN backward at T=128 B=32 I=H=512, 2 threads: 42.2-43.6 against
/// 42.7-43.6 ms row by row).
fn pack_strips<F: Float>(m: &[F], ld: usize, k: usize, n: usize, width: usize, out: &mut [F]) {
    // Full rows of a strip copied with a width known at compile time: a copy of a run-time
    // length becomes a call to memcpy per row, which cost 4% of an RNN backward.
    match width {
        2 => pack_strips_by_strip::<F, 2>(m, ld, k, n, out),
        6 => pack_strips_by_strip::<F, 6>(m, ld, k, n, out),
        16 => pack_strips_by_row::<F, 16>(m, ld, k, n, out),
        _ => unreachable!("pack_strips: no strip width {width}"),
    }
}

/// [`pack_strips`] for strips of `W` columns, row by row of `M`: each row is read front to
/// back (which the hardware prefetcher follows) and its pieces go to every strip. Strip by
/// strip instead, reading `k` rows at a stride of `ld` per strip, B's packing spent 70% of
/// its time waiting on those reads (`perf`; the packing was 15% of the time of an RNN's
/// weight gradients).
fn pack_strips_by_row<F: Float, const W: usize>(
    m: &[F],
    ld: usize,
    k: usize,
    n: usize,
    out: &mut [F],
) {
    let full = n / W;
    let tail = n - full * W;
    let strips = n.div_ceil(W);
    let out = &mut out[..strips * k * W];
    for p in 0..k {
        let src = &m[p * ld..p * ld + n];
        for q in 0..full {
            let row: &[F; W] = src[q * W..q * W + W].try_into().expect("W elements");
            out[(q * k + p) * W..(q * k + p + 1) * W].copy_from_slice(row);
        }
        if tail > 0 {
            let dst = &mut out[(full * k + p) * W..(full * k + p + 1) * W];
            dst[..tail].copy_from_slice(&src[full * W..]);
            dst[tail..].fill(F::ZERO);
        }
    }
}

/// [`pack_strips`] for strips of `W` columns, strip by strip (each strip's `k` rows at a
/// stride of `ld`).
fn pack_strips_by_strip<F: Float, const W: usize>(
    m: &[F],
    ld: usize,
    k: usize,
    n: usize,
    out: &mut [F],
) {
    for (q, strip) in out[..n.div_ceil(W) * k * W]
        .chunks_exact_mut(k * W)
        .enumerate()
    {
        let c0 = q * W;
        let w = (n - c0).min(W);
        for (p, dst) in strip.chunks_exact_mut(W).enumerate() {
            let src = &m[p * ld + c0..];
            if w == W {
                let row: &[F; W] = src[..W].try_into().expect("W elements");
                dst.copy_from_slice(row);
            } else {
                dst[..w].copy_from_slice(&src[..w]);
                dst[w..].fill(F::ZERO);
            }
        }
    }
}

/// `P[rows, G*H] = X[rows, I] · W_ihᵀ` on the packed step GEMM (measured faster than
/// matrixmultiply on this shape: 108 vs 93 GFLOP/s at 2048×512×2048, one thread), the row
/// blocks spread over the current pool when `shards > 1`. Each element is the sum over `k` in
/// order, whatever the blocking, so the streaming step (the same GEMM on one row) computes
/// the same bits.
pub(crate) fn input_projection<F: Float>(
    isa: IsaToken,
    shards: usize,
    x: &[F],
    i: usize,
    w: PackedRef<'_, F>,
    p: &mut [F],
) {
    let rows = x.len() / i.max(1);
    gemm_packed_rows(isa, shards, rows, x, i, i, w, p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;

    /// Plain triple loop in f64, the oracle for the blocked versions.
    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        c
    }

    fn data(len: usize, seed: u64) -> Vec<f64> {
        (0..len as u64)
            .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f64 - 500.0) / 250.0)
            .collect()
    }

    /// Ragged shapes (not multiples of the tile, block, chunk or panel) on every path and
    /// shard count; f32 against the f64 product within a bound from the f32 rounding of a
    /// `k`-term dot product of values below 2: `k · 2^-24 · Σ|a||b|` (γ_k).
    #[test]
    fn gemm_packed_rows_and_weight_grad_match_naive() {
        for isa in Isa::available() {
            let tok = isa.resolve();
            for (m, k, n) in [(1, 1, 1), (7, 300, 19), (50, 520, 33), (25, 257, 16)] {
                let a = data(m * k, 1);
                let b = data(k * n, 2);
                let want = naive(&a, &b, m, k, n);
                // Σ|a||b| per element; the chain's error is at most γ_k times it (plus the
                // start value of C, for the accumulating term).
                let abs_sums: Vec<f64> = {
                    let aa: Vec<f64> = a.iter().map(|v| v.abs()).collect();
                    let bb: Vec<f64> = b.iter().map(|v| v.abs()).collect();
                    naive(&aa, &bb, m, k, n)
                };
                let gamma = (k + 1) as f64 * f32::EPSILON as f64;
                let a32: Vec<f32> = a.iter().map(|v| *v as f32).collect();
                let b32: Vec<f32> = b.iter().map(|v| *v as f32).collect();
                // A column-major copy for weight_grad: at [k, m].
                let mut at32 = vec![0.0f32; k * m];
                for i in 0..m {
                    for p in 0..k {
                        at32[p * m + i] = a32[i * k + p];
                    }
                }
                let lay = PackedLayout {
                    k,
                    groups: 1,
                    group_width: n,
                    nr: <f32 as crate::kernels::dispatch::StepKernels>::PANEL_WIDTH,
                };
                let mut packed = vec![0.0f32; lay.len()];
                lay.pack(&mut packed, |p, j| b32[p * n + j]);
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for shards in [1, 2, 3] {
                    let mut c1 = vec![f32::NAN; m * n];
                    let run = || {
                        gemm_packed_rows(
                            tok,
                            shards,
                            m,
                            &a32,
                            k,
                            k,
                            PackedRef::all(&packed, lay),
                            &mut c1,
                        )
                    };
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(shards)
                        .build()
                        .unwrap()
                        .install(run);
                    // Two terms splitting A's columns, the second accumulating onto 1.0.
                    let split = m / 2;
                    let mut c2 = vec![f32::NAN; m * n];
                    c2[split * n..].fill(1.0);
                    let (lo, hi) = c2.split_at_mut(split * n);
                    let terms = vec![
                        GradTerm {
                            b: &b32,
                            ldb: n,
                            n,
                            m0: 0,
                            m1: split,
                            c: lo,
                        },
                        GradTerm {
                            b: &b32,
                            ldb: n,
                            n,
                            m0: split,
                            m1: m,
                            c: hi,
                        },
                    ];
                    // The second term accumulates: run it as its own call.
                    let mut terms = terms.into_iter();
                    let (t0, t1) = (terms.next().unwrap(), terms.next().unwrap());
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(shards)
                        .build()
                        .unwrap();
                    // Scratch left over from other data, as a workspace's is on later calls.
                    let mut scratch =
                        vec![f32::NAN; shards * weight_grad_scratch_len::<f32>(k, &[n])];
                    pool.install(|| {
                        let s = &mut scratch;
                        weight_grad(tok, shards, &at32, m, k, vec![t0], Accumulate::No, s);
                        weight_grad(tok, shards, &at32, m, k, vec![t1], Accumulate::Yes, s);
                    });
                    for idx in 0..m * n {
                        let extra = if idx >= split * n { 1.0 } else { 0.0 };
                        assert!(
                            (c1[idx] as f64 - want[idx]).abs() <= gamma * abs_sums[idx],
                            "{isa:?} rows {m}x{k}x{n} shards {shards} at {idx}"
                        );
                        assert!(
                            (c2[idx] as f64 - want[idx] - extra).abs()
                                <= gamma * (abs_sums[idx] + extra),
                            "{isa:?} grad {m}x{k}x{n} shards {shards} at {idx}"
                        );
                    }
                    match &first {
                        None => first = Some((c1, c2)),
                        Some((f1, f2)) => {
                            assert!(f1.iter().zip(&c1).all(|(x, y)| x.to_bits() == y.to_bits()));
                            assert!(f2.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
                        }
                    }
                }
            }
        }
    }
}
