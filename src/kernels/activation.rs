//! The slice kernels behind [`crate::activation`]: one generic loop per function, entered
//! through a `#[target_feature]` wrapper per ISA.

use crate::kernels::isa::{Avx2FmaToken, Avx512Token, IsaToken};
use crate::kernels::simd::{MAX_LANES, SimdOps};
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd_avx2::Avx2F32;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd_avx512::Avx512F32;
use crate::kernels::simd_portable::PortableF32;

/// `sigmoid` on `isa` (slices of equal length where there are two).
pub(crate) fn sigmoid(isa: IsaToken, input: &[f32], output: &mut [f32]) {
    match isa {
        IsaToken::Portable => sigmoid_slice(PortableF32, input, output),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX2 and FMA.
        IsaToken::Avx2Fma(t) => unsafe { sigmoid_avx2(t, input, output) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX-512F.
        IsaToken::Avx512(t) => unsafe { sigmoid_avx512(t, input, output) },
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx2Fma(t) => unreachable_token(t),
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx512(t) => unreachable_token(t),
    }
}

/// `tanh` on `isa` (slices of equal length where there are two).
pub(crate) fn tanh(isa: IsaToken, input: &[f32], output: &mut [f32]) {
    match isa {
        IsaToken::Portable => tanh_slice(PortableF32, input, output),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX2 and FMA.
        IsaToken::Avx2Fma(t) => unsafe { tanh_avx2(t, input, output) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX-512F.
        IsaToken::Avx512(t) => unsafe { tanh_avx512(t, input, output) },
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx2Fma(t) => unreachable_token(t),
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx512(t) => unreachable_token(t),
    }
}

/// `sigmoid_in_place` on `isa` (slices of equal length where there are two).
pub(crate) fn sigmoid_in_place(isa: IsaToken, data: &mut [f32]) {
    match isa {
        IsaToken::Portable => sigmoid_slice_in_place(PortableF32, data),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX2 and FMA.
        IsaToken::Avx2Fma(t) => unsafe { sigmoid_in_place_avx2(t, data) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX-512F.
        IsaToken::Avx512(t) => unsafe { sigmoid_in_place_avx512(t, data) },
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx2Fma(t) => unreachable_token(t),
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx512(t) => unreachable_token(t),
    }
}

/// `tanh_in_place` on `isa` (slices of equal length where there are two).
pub(crate) fn tanh_in_place(isa: IsaToken, data: &mut [f32]) {
    match isa {
        IsaToken::Portable => tanh_slice_in_place(PortableF32, data),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX2 and FMA.
        IsaToken::Avx2Fma(t) => unsafe { tanh_in_place_avx2(t, data) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU supports AVX-512F.
        IsaToken::Avx512(t) => unsafe { tanh_in_place_avx512(t, data) },
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx2Fma(t) => unreachable_token(t),
        #[cfg(not(target_arch = "x86_64"))]
        IsaToken::Avx512(t) => unreachable_token(t),
    }
}

/// Off x86-64 no AVX token can be created (their `try_new` returns `None`).
#[cfg(not(target_arch = "x86_64"))]
fn unreachable_token<T>(_: T) {
    unreachable!("AVX tokens exist only on x86-64")
}

/// # Safety
/// The CPU must support AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(t: Avx2FmaToken, input: &[f32], output: &mut [f32]) {
    sigmoid_slice(Avx2F32::new(t), input, output)
}

/// # Safety
/// The CPU must support AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh_avx2(t: Avx2FmaToken, input: &[f32], output: &mut [f32]) {
    tanh_slice(Avx2F32::new(t), input, output)
}

/// # Safety
/// The CPU must support AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_in_place_avx2(t: Avx2FmaToken, data: &mut [f32]) {
    sigmoid_slice_in_place(Avx2F32::new(t), data)
}

/// # Safety
/// The CPU must support AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh_in_place_avx2(t: Avx2FmaToken, data: &mut [f32]) {
    tanh_slice_in_place(Avx2F32::new(t), data)
}

/// # Safety
/// The CPU must support AVX-512F (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sigmoid_avx512(t: Avx512Token, input: &[f32], output: &mut [f32]) {
    sigmoid_slice(Avx512F32::new(t), input, output)
}

/// # Safety
/// The CPU must support AVX-512F (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tanh_avx512(t: Avx512Token, input: &[f32], output: &mut [f32]) {
    tanh_slice(Avx512F32::new(t), input, output)
}

/// # Safety
/// The CPU must support AVX-512F (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sigmoid_in_place_avx512(t: Avx512Token, data: &mut [f32]) {
    sigmoid_slice_in_place(Avx512F32::new(t), data)
}

/// # Safety
/// The CPU must support AVX-512F (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tanh_in_place_avx512(t: Avx512Token, data: &mut [f32]) {
    tanh_slice_in_place(Avx512F32::new(t), data)
}

/// `output[i] = sigmoid(input[i])`; the slices have equal lengths.
#[inline(always)]
fn sigmoid_slice<S: SimdOps<Elem = f32>>(s: S, input: &[f32], output: &mut [f32]) {
    map_slice::<S, Sigmoid>(s, input, output)
}

/// `output[i] = tanh(input[i])`; the slices have equal lengths.
#[inline(always)]
fn tanh_slice<S: SimdOps<Elem = f32>>(s: S, input: &[f32], output: &mut [f32]) {
    map_slice::<S, Tanh>(s, input, output)
}

/// `data[i] = sigmoid(data[i])`.
#[inline(always)]
fn sigmoid_slice_in_place<S: SimdOps<Elem = f32>>(s: S, data: &mut [f32]) {
    map_in_place::<S, Sigmoid>(s, data)
}

/// `data[i] = tanh(data[i])`.
#[inline(always)]
fn tanh_slice_in_place<S: SimdOps<Elem = f32>>(s: S, data: &mut [f32]) {
    map_in_place::<S, Tanh>(s, data)
}

/// The function a slice loop applies, chosen at compile time. (Not a closure: a closure is
/// its own function without the caller's `#[target_feature]`s, so the intrinsics in it would
/// not inline.)
trait Activation {
    /// The function on one vector.
    fn apply<S: SimdOps<Elem = f32>>(s: S, v: S::V) -> S::V;
    /// The function on `U` vectors in place, bit for bit as [`Activation::apply`] on each.
    fn apply_n<S: SimdOps<Elem = f32>, const U: usize>(s: S, v: &mut [S::V; U]);
}

/// [`SimdOps::sigmoid`].
struct Sigmoid;

impl Activation for Sigmoid {
    #[inline(always)]
    fn apply<S: SimdOps<Elem = f32>>(s: S, v: S::V) -> S::V {
        s.sigmoid(v)
    }
    #[inline(always)]
    fn apply_n<S: SimdOps<Elem = f32>, const U: usize>(s: S, v: &mut [S::V; U]) {
        s.sigmoid_n(v)
    }
}

/// [`SimdOps::tanh`].
struct Tanh;

impl Activation for Tanh {
    #[inline(always)]
    fn apply<S: SimdOps<Elem = f32>>(s: S, v: S::V) -> S::V {
        s.tanh(v)
    }
    #[inline(always)]
    fn apply_n<S: SimdOps<Elem = f32>, const U: usize>(s: S, v: &mut [S::V; U]) {
        s.tanh_n(v)
    }
}

/// Vectors per iteration of the main loops of [`map_slice`] and [`map_in_place`].
const UNROLL: usize = 4;

/// Applies `A` to full vectors of `input` (UNROLL per iteration, then one), then to the tail
/// through a zero-padded buffer run through the same vector code, so every element gets the
/// same computation.
#[inline(always)]
fn map_slice<S: SimdOps<Elem = f32>, A: Activation>(s: S, input: &[f32], output: &mut [f32]) {
    debug_assert_eq!(input.len(), output.len());
    let mut ins_u = input.chunks_exact(UNROLL * S::LANES);
    let mut outs_u = output.chunks_exact_mut(UNROLL * S::LANES);
    for (i, o) in (&mut ins_u).zip(&mut outs_u) {
        let v = apply_unrolled::<S, A>(s, i);
        store_unrolled(s, o, &v);
    }
    let mut ins = ins_u.remainder().chunks_exact(S::LANES);
    let mut outs = outs_u.into_remainder().chunks_exact_mut(S::LANES);
    for (i, o) in (&mut ins).zip(&mut outs) {
        s.store(o, A::apply(s, s.load(i)));
    }
    let (i, o) = (ins.remainder(), outs.into_remainder());
    if !i.is_empty() {
        let buf = apply_partial::<S, A>(s, i);
        o.copy_from_slice(&buf[..o.len()]);
    }
}

/// [`map_slice`] over one buffer.
#[inline(always)]
fn map_in_place<S: SimdOps<Elem = f32>, A: Activation>(s: S, data: &mut [f32]) {
    let mut chunks_u = data.chunks_exact_mut(UNROLL * S::LANES);
    for c in &mut chunks_u {
        let v = apply_unrolled::<S, A>(s, c);
        store_unrolled(s, c, &v);
    }
    let mut chunks = chunks_u.into_remainder().chunks_exact_mut(S::LANES);
    for c in &mut chunks {
        s.store(c, A::apply(s, s.load(c)));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let buf = apply_partial::<S, A>(s, rest);
        let n = rest.len();
        rest.copy_from_slice(&buf[..n]);
    }
}

/// `A` of the first `UNROLL` vectors of `src`: all loaded before any result is stored, and
/// handed to the activation together, so a path can interleave their independent dependency
/// chains (the AVX2 path does; see `Avx2F32::interleave`).
#[inline(always)]
fn apply_unrolled<S: SimdOps<Elem = f32>, A: Activation>(s: S, src: &[f32]) -> [S::V; UNROLL] {
    let mut v = [s.splat(0.0); UNROLL];
    for (k, vk) in v.iter_mut().enumerate() {
        *vk = s.load(&src[k * S::LANES..]);
    }
    A::apply_n(s, &mut v);
    v
}

/// Stores `UNROLL` vectors at the start of `dst`.
#[inline(always)]
fn store_unrolled<S: SimdOps<Elem = f32>>(s: S, dst: &mut [f32], v: &[S::V; UNROLL]) {
    for (k, vk) in v.iter().enumerate() {
        s.store(&mut dst[k * S::LANES..], *vk);
    }
}

/// `A` of a partial vector (fewer than `LANES` elements), zero-padded: the first
/// `src.len()` elements of the result are the ones wanted.
#[inline(always)]
fn apply_partial<S: SimdOps<Elem = f32>, A: Activation>(s: S, src: &[f32]) -> [f32; MAX_LANES] {
    let mut buf = [0.0f32; MAX_LANES];
    buf[..src.len()].copy_from_slice(src);
    let v = A::apply(s, s.load(&buf));
    s.store(&mut buf, v);
    buf
}
