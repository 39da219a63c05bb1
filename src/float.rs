//! The element types the crate computes in: `f32` (the fast path) and `f64` (the precision
//! path used for gradient checks).

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// `f32` or `f64`. Sealed: the kernels behind it exist for these two only.
pub trait Float:
    crate::float::sealed::Sealed
    + Copy
    + Default
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Machine epsilon (2^-23 for f32, 2^-52 for f64).
    const EPSILON: Self;
    /// The largest finite value (`f32::MAX`, `f64::MAX`).
    const MAX: Self;
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Rounds an f64 to this type.
    fn from_f64(v: f64) -> Self;
    /// Widens to f64 (exact).
    fn to_f64(self) -> f64;
    /// e^self, std's accurate function.
    fn exp(self) -> Self;
    /// tanh, std's accurate function.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// The logistic function `1 / (1 + e^-x)`, accurate scalar form (exp of `-|x|`, reflected
    /// by sign, so negative inputs keep full relative accuracy).
    fn sigmoid(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty, $name:literal) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPSILON: Self = <$t>::EPSILON;
            const MAX: Self = <$t>::MAX;
            const NAME: &'static str = $name;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn sigmoid(self) -> Self {
                let e = (-self.abs()).exp();
                let s = e / (1.0 + e);
                if self > 0.0 { 1.0 - s } else { s }
            }
        }
    };
}
impl_float!(f32, "f32");
impl_float!(f64, "f64");

/// The accurate f64 logistic function used by the f64 kernels.
#[inline(always)]
pub(crate) fn sigmoid_f64(x: f64) -> f64 {
    Float::sigmoid(x)
}

pub(crate) mod sealed {
    /// The crate-internal half of [`Float`](super::Float): GEMM and kernel dispatch per type.
    /// Public in a private module, so users can neither name nor implement it.
    pub trait Sealed:
        crate::kernels::strided_gemm::GemmScalar
        + crate::kernels::dispatch::StepKernels
        + crate::kernels::dispatch::FoldKernels
    {
    }
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
