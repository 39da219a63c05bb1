// TEMP local stand-in until the act branch merges; not committed.
use super::simd::SimdOps;
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableF32;
impl SimdOps for PortableF32 {
    type Elem = f32;
    type V = f32;
    const LANES: usize = 1;
    fn splat(self, x: f32) -> f32 {
        x
    }
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    fn store(self, s: &mut [f32], v: f32) {
        s[0] = v
    }
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    fn relu(self, v: f32) -> f32 {
        if v > 0.0 || v.is_nan() { v } else { 0.0 }
    }
    fn step(self, v: f32) -> f32 {
        if v > 0.0 { 1.0 } else { 0.0 }
    }
    fn sigmoid(self, v: f32) -> f32 {
        crate::Float::sigmoid(v)
    }
    fn tanh(self, v: f32) -> f32 {
        v.tanh()
    }
}
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2F32;
impl Avx2F32 {
    pub(crate) fn new(_t: super::isa::Avx2FmaToken) -> PortableF32 {
        PortableF32
    }
}
