//! Instruction-set selection: detected once at run time, never from compile-time flags, so a
//! library built without RUSTFLAGS still runs AVX2+FMA (or AVX-512) code where the CPU has it.

use crate::error::{Error, Result};

/// An instruction-set path for the f32 kernels.
///
/// Every path computes the same functions within the documented error bounds; they may differ
/// in the last bits (e.g. the portable path's multiply-add is not fused). Force
/// [`Isa::Portable`] for results that do not depend on the CPU. f64 kernels are scalar and
/// ignore this choice.
///
/// Non-exhaustive: paths are added as CPUs gain instruction sets (`Avx512` was), so a `match`
/// outside this crate needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// `wide::f32x8` code, whatever the compile-time target features give it (SSE2 on a plain
    /// x86-64 build, with unfused multiply-add).
    Portable,
    /// `core::arch` AVX2 + FMA code in `#[target_feature]` functions (x86-64 only).
    Avx2Fma,
    /// The AVX2+FMA kernels on 512-bit AVX-512F registers (x86-64 only): the GEMMs (the
    /// per-step GEMM and the big ones built on its micro-kernel) with wider register tiles, the
    /// activations and state updates on 16 lanes. Results are bit for bit those of `Avx2Fma`:
    /// every output element comes from the same operations in the same order, only more
    /// elements per instruction. The default where the CPU has AVX-512F. Whether it beats
    /// `Avx2Fma` depends on the CPU (see BENCHMARKS.md); on Intel parts that lower their clock for 512-bit
    /// work, time it against `Avx2Fma` ([`Layer::set_isa`](crate::Layer::set_isa)).
    Avx512,
}

/// The size of the L3 cache of the calling core, from CPUID's deterministic cache parameters
/// (leaf 4 on Intel, leaf `0x8000_001D` on AMD), read once; `None` where CPUID does not say
/// (other architectures, hypervisors that hide the leaves, implausible values). For AMD parts
/// with several core complexes this is one complex's L3, the part a core actually uses.
pub(crate) fn l3_cache_bytes() -> Option<usize> {
    static L3: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *L3.get_or_init(detect_l3_bytes)
}

#[cfg(target_arch = "x86_64")]
fn detect_l3_bytes() -> Option<usize> {
    use core::arch::x86_64::__cpuid_count;
    let max_basic = __cpuid_count(0, 0).eax;
    let max_ext = __cpuid_count(0x8000_0000, 0).eax;
    // AMD's leaf 0x8000_001D exists with the TopologyExtensions bit (0x8000_0001 ECX bit 22).
    let amd_leaf = max_ext >= 0x8000_001D && __cpuid_count(0x8000_0001, 0).ecx & (1 << 22) != 0;
    let leaves = [(4, max_basic >= 4), (0x8000_001D, amd_leaf)];
    for (leaf, _) in leaves.into_iter().filter(|&(_, present)| present) {
        // Sub-leaves list the caches until a null type (0); both leaves share the format.
        for sub in 0..16 {
            let r = __cpuid_count(leaf, sub);
            let kind = r.eax & 0x1f;
            if kind == 0 {
                break;
            }
            let level = (r.eax >> 5) & 0x7;
            if level == 3 && kind == 3 {
                let ways = (r.ebx >> 22) as usize + 1;
                let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                let sets = r.ecx as usize + 1;
                let bytes = ways * partitions * line * sets;
                return (1 << 20..=1 << 30).contains(&bytes).then_some(bytes);
            }
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_l3_bytes() -> Option<usize> {
    None
}

impl Isa {
    /// The fastest path this CPU supports.
    pub fn detect() -> Isa {
        if Avx512Token::try_new().is_some() {
            Isa::Avx512
        } else if Avx2FmaToken::try_new().is_some() {
            Isa::Avx2Fma
        } else {
            Isa::Portable
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => Avx2FmaToken::try_new().is_some(),
            Isa::Avx512 => Avx512Token::try_new().is_some(),
        }
    }

    /// Every path this CPU can run, portable first (tests run them all and compare).
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The path's name, as used in benchmark ids.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2_fma",
            Isa::Avx512 => "avx512",
        }
    }

    /// `Ok(self)` if available, else [`Error::IsaUnavailable`].
    pub fn checked(self) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::IsaUnavailable { isa: self.name() })
        }
    }

    /// Resolves the path into the proof the kernels take. Unavailable paths fall back to
    /// portable; public entries reject them earlier with [`Isa::checked`].
    pub(crate) fn resolve(self) -> IsaToken {
        match self {
            Isa::Portable => IsaToken::Portable,
            Isa::Avx2Fma => match Avx2FmaToken::try_new() {
                Some(t) => IsaToken::Avx2Fma(t),
                None => IsaToken::Portable,
            },
            Isa::Avx512 => match Avx512Token::try_new() {
                Some(t) => IsaToken::Avx512(t),
                None => IsaToken::Portable,
            },
        }
    }
}

/// A resolved path: for AVX2+FMA it carries the proof that the CPU has the features.
#[derive(Debug, Clone, Copy)]
pub enum IsaToken {
    Portable,
    Avx2Fma(Avx2FmaToken),
    Avx512(Avx512Token),
}

/// Zero-sized proof that the running CPU supports AVX2 and FMA. Only [`Avx2FmaToken::try_new`]
/// creates one, after run-time detection, so holding one makes calling
/// `#[target_feature(enable = "avx2,fma")]` functions sound.
#[derive(Debug, Clone, Copy)]
pub struct Avx2FmaToken(());

impl Avx2FmaToken {
    /// Detects the features (std caches the CPUID result; this costs nanoseconds).
    #[inline]
    pub(crate) fn try_new() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Avx2FmaToken(()));
            }
        }
        None
    }
}

/// Zero-sized proof that the running CPU supports AVX-512F as well as AVX2 and FMA; only
/// [`Avx512Token::try_new`] creates one, after run-time detection, so holding one makes calling
/// `#[target_feature(enable = "avx512f,avx2,fma")]` functions sound.
#[derive(Debug, Clone, Copy)]
pub struct Avx512Token(());

impl Avx512Token {
    /// Detects the features (std caches the CPUID result).
    #[inline]
    pub(crate) fn try_new() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if Avx2FmaToken::try_new().is_some() && std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Avx512Token(()));
            }
        }
        None
    }
}
