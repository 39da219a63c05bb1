//! The vector operations the fused kernels are written in, once, generically.
//!
//! Three implementations: [`ScalarF64`] (one lane, std's accurate functions: the f64 precision
//! path), `PortableF32` (`wide::f32x8`, in `simd_portable.rs`) and `Avx2F32` (`core::arch`
//! `__m256`, in `simd_avx2.rs`, only constructible from an [`Avx2FmaToken`](super::isa::Avx2FmaToken)).
//! Kernels written as `fn k<S: SimdOps>(s: S, ..)` with `#[inline(always)]` are instantiated
//! per implementation; the AVX2 instantiation is called from a `#[target_feature(enable =
//! "avx2,fma")]` wrapper so every operation inlines into AVX2+FMA code.

/// `[f(0), .., f(N - 1)]`, built by a plain loop over `[fill; N]`.
///
/// The kernels build their register arrays with this, never `core::array::from_fn`: `from_fn`
/// hands its closure through std's `try_from_fn` frames, which carry no `#[target_feature]`,
/// and under a default release profile (16 codegen units, no LTO, as every crate linking this
/// one builds it) LLVM left those frames out of line, so the intrinsics inside the closure
/// became calls: the AVX2 step GEMM ran at a tenth of its speed. This loop inlines into the
/// caller whatever the profile.
#[inline(always)]
pub(crate) fn array_from<T: Copy, const N: usize>(
    fill: T,
    mut f: impl FnMut(usize) -> T,
) -> [T; N] {
    let mut out = [fill; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = f(i);
    }
    out
}

/// Vector operations over `LANES` elements of `Elem`.
///
/// Contract for every implementation:
/// - `load`/`store` read/write exactly the first `LANES` elements of the slice and panic if
///   it is shorter (callers pass exact chunks; the check is a compare the optimiser hoists or
///   that costs nothing next to the arithmetic).
/// - `sigmoid` and `tanh` meet the crate's documented error bound (≤ 4 ULP for f32 over
///   [-30, 30] against an f64 reference), return exact special values (±0 → ±0 for tanh, 0.5
///   for sigmoid; ±inf → ±1 / 1, 0; NaN → NaN) and never produce subnormal outputs.
/// - `relu(NaN)` is NaN.
pub(crate) trait SimdOps: Copy {
    /// The element type.
    type Elem: Copy + Default + OneElem;
    /// A vector of `LANES` elements.
    type V: Copy;
    /// Elements per vector (at most [`MAX_LANES`]).
    const LANES: usize;

    /// All lanes `x`.
    fn splat(self, x: Self::Elem) -> Self::V;
    /// The first `LANES` elements of `s`.
    fn load(self, s: &[Self::Elem]) -> Self::V;
    /// Writes `v` to the first `LANES` elements of `s`.
    fn store(self, s: &mut [Self::Elem], v: Self::V);
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the path has FMA).
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `max(v, 0)`, NaN propagating.
    fn relu(self, v: Self::V) -> Self::V;
    /// `1` where `v > 0`, else `0` (the ReLU derivative; NaN gives 0).
    fn step(self, v: Self::V) -> Self::V;
    /// The logistic function `1 / (1 + exp(-v))`.
    fn sigmoid(self, v: Self::V) -> Self::V;
    /// The hyperbolic tangent.
    fn tanh(self, v: Self::V) -> Self::V;
    /// Replaces each of `U` independent vectors with its [`sigmoid`](Self::sigmoid), bit for bit
    /// the same per-vector results. A path may override it to interleave the vectors' computations
    /// (the slice loops of `crate::activation` call it with 4 vectors).
    #[inline(always)]
    fn sigmoid_n<const U: usize>(self, v: &mut [Self::V; U]) {
        for x in v {
            *x = self.sigmoid(*x);
        }
    }
    /// Replaces each of `U` independent vectors with its [`tanh`](Self::tanh), as
    /// [`sigmoid_n`](Self::sigmoid_n) does.
    #[inline(always)]
    fn tanh_n<const U: usize>(self, v: &mut [Self::V; U]) {
        for x in v {
            *x = self.tanh(*x);
        }
    }
}

/// The constant 1 of an element type.
pub trait OneElem {
    /// 1.
    const ONE: Self;
}
impl OneElem for f32 {
    const ONE: Self = 1.0;
}
impl OneElem for f64 {
    const ONE: Self = 1.0;
}

/// Upper bound of [`SimdOps::LANES`] over all implementations (tail buffers use it).
pub(crate) const MAX_LANES: usize = 16;

/// One f64 lane with std's functions: the accurate precision path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScalarF64;

impl SimdOps for ScalarF64 {
    type Elem = f64;
    type V = f64;
    const LANES: usize = 1;

    #[inline(always)]
    fn splat(self, x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f64]) -> f64 {
        s[0]
    }
    #[inline(always)]
    fn store(self, s: &mut [f64], v: f64) {
        s[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f64, b: f64) -> f64 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f64, b: f64) -> f64 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f64, b: f64) -> f64 {
        a * b
    }
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64, c: f64) -> f64 {
        // Unfused on purpose: matches the reference's `a * b + c` bit for bit, and a software
        // `f64::mul_add` call would be slow where the CPU has no FMA in the baseline target.
        a * b + c
    }
    #[inline(always)]
    fn relu(self, v: f64) -> f64 {
        if v > 0.0 || v.is_nan() { v } else { 0.0 }
    }
    #[inline(always)]
    fn step(self, v: f64) -> f64 {
        if v > 0.0 { 1.0 } else { 0.0 }
    }
    #[inline(always)]
    fn sigmoid(self, v: f64) -> f64 {
        crate::float::sigmoid_f64(v)
    }
    #[inline(always)]
    fn tanh(self, v: f64) -> f64 {
        v.tanh()
    }
}
