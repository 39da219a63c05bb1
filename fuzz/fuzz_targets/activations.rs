//! `fused_rnn::activation` on arbitrary f32 slices, on every available ISA path.
//!
//! The input is decoded 5 bytes per element (a tag and 32 data bits): raw bit patterns (any
//! NaN payload, infinities, subnormals, huge values), uniform values in [-30, 30], log-uniform
//! magnitudes from subnormal to 32, and values within a few ULP of the kernels' thresholds.
//! Slices have any length (0 included, any remainder mod 8).
//!
//! Checked against the f64 references of `testkit::activation` (those of
//! `tests/activation_accuracy.rs`), per element:
//!
//! - `x` in [-30, 30]: at most 4 ULP (the spacing of f32 at the reference value), where the
//!   reference is a normal f32; where it is below the smallest normal (only tanh of a tiny `x`
//!   gets there inside [-30, 30]) the result is `x` itself, bit for bit; tanh exactly ±1 where
//!   the reference rounds to ±1.
//! - outside: the documented table of `src/activation.rs`: NaN gives NaN, sigmoid(+inf) = 1,
//!   sigmoid(-inf) = 0, tanh(±inf) = ±1, sigmoid exactly 0 for `x < -87.33654`, tanh exactly
//!   ±1 for `|x| >= 9.010914` (so for every finite `|x| > 30`); for the rest (sigmoid on
//!   (-87.33654, -30) and (30, f32::MAX]) the docs give no error bound, so only what they do
//!   state is checked: the result lies in [0, 1] and is not NaN.
//! - every input: ±0 gives sigmoid 0.5 and tanh ±0 (sign kept), no subnormal output for a
//!   normal input, NaN exactly where the input is NaN.
//! - in place equals out of place bit for bit, and an element's result does not depend on its
//!   position or the slice length (the slice shifted by one and every single element give the
//!   same bits).

#![no_main]

use fused_rnn::Isa;
use fused_rnn::activation::{sigmoid, sigmoid_in_place, tanh, tanh_in_place};
use libfuzzer_sys::fuzz_target;
use testkit::activation::{MAX_ULP, sigmoid_ref, tanh_ref, ulp_at};

/// Below this sigmoid returns exactly 0 (documented).
const SIGMOID_FLUSH: f32 = -87.33654;
/// From this magnitude on tanh returns exactly ±1 (documented).
const TANH_ONE: f32 = 9.010914;

/// Thresholds and branch points around which inputs are placed a few ULP apart.
const EDGES: [f32; 8] = [
    0.0,
    1.0 / 4096.0,
    0.173_286_8, // ln2/4: where tanh's reduction first takes n = -1
    TANH_ONE,
    17.328_68, // where 1/(1 + e^-x) rounds to 1 in f32
    30.0,
    87.33654,
    88.72284, // exp overflow in f32
];

fn decode(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(5)
        .map(|c| {
            let bits = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
            match c[0] % 4 {
                0 => f32::from_bits(bits),
                // Uniform in [-30, 30].
                1 => ((f64::from(bits) / f64::from(u32::MAX)) * 60.0 - 30.0) as f32,
                // Log-uniform magnitude, any sign, from subnormal up to 32.
                2 => {
                    let exp = ((bits >> 23) & 0xff) % 132;
                    f32::from_bits((bits & 0x807f_ffff) | (exp << 23))
                }
                // Within 128 ULP of a threshold, either sign.
                _ => {
                    let edge = EDGES[(bits & 7) as usize];
                    let off = ((bits >> 3) & 0xff) as i32 - 128;
                    let e = (edge.to_bits() as i32 + off).max(0) as u32;
                    let v = f32::from_bits(e);
                    if bits & (1 << 31) != 0 { -v } else { v }
                }
            }
        })
        .collect()
}

type OutOfPlace = fn(Isa, &[f32], &mut [f32]) -> fused_rnn::Result<()>;
type InPlace = fn(Isa, &mut [f32]) -> fused_rnn::Result<()>;

fn check_element(name: &str, isa: Isa, x: f32, y: f32) {
    let ctx = || {
        format!(
            "{name} {}: x = {x:e} ({:#010x}) -> {y:e}",
            isa.name(),
            x.to_bits()
        )
    };
    assert_eq!(x.is_nan(), y.is_nan(), "{}: NaN mismatch", ctx());
    if x.is_nan() {
        return;
    }
    assert!(
        y == 0.0 || y.abs() >= f32::MIN_POSITIVE || x.is_subnormal(),
        "{}: subnormal output",
        ctx()
    );
    let tanh_f = name == "tanh";
    // Exact special values.
    if x == 0.0 {
        let want = if tanh_f { x } else { 0.5 };
        assert_eq!(y.to_bits(), want.to_bits(), "{}: special value", ctx());
        return;
    }
    if x.is_infinite() {
        let want = match (tanh_f, x > 0.0) {
            (_, true) => 1.0f32,
            (true, false) => -1.0,
            (false, false) => 0.0,
        };
        assert_eq!(y.to_bits(), want.to_bits(), "{}: special value", ctx());
        return;
    }
    if tanh_f && x.abs() >= TANH_ONE {
        assert_eq!(y, x.signum(), "{}: must be exactly ±1", ctx());
        return;
    }
    if !tanh_f && x < SIGMOID_FLUSH {
        assert_eq!(y.to_bits(), 0, "{}: must be exactly +0", ctx());
        return;
    }
    if !(-30.0..=30.0).contains(&x) {
        // Only sigmoid on (-87.33654, -30) and (30, MAX] gets here: no documented bound.
        assert!((0.0..=1.0).contains(&y), "{}: outside [0, 1]", ctx());
        return;
    }
    let r = if tanh_f { tanh_ref(x) } else { sigmoid_ref(x) };
    if r.abs() < f64::from(f32::MIN_POSITIVE) {
        // tanh of a tiny x; sigmoid's reference is >= 9e-14 on [-30, 30].
        let want = if tanh_f { x } else { 0.0 };
        assert_eq!(y.to_bits(), want.to_bits(), "{}: reference {r:e}", ctx());
        return;
    }
    if tanh_f && (r as f32).abs() == 1.0 {
        assert_eq!(y, r as f32, "{}: must be exactly ±1", ctx());
    }
    let ulp = (f64::from(y) - r).abs() / ulp_at(r);
    assert!(
        ulp <= MAX_ULP,
        "{}: reference {r:e}, {ulp:.3} ULP (bound {MAX_ULP})",
        ctx()
    );
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fuzz_target!(|data: &[u8]| {
    let xs = decode(data);
    let funcs: [(&str, OutOfPlace, InPlace); 2] = [
        ("sigmoid", sigmoid, sigmoid_in_place),
        ("tanh", tanh, tanh_in_place),
    ];
    for isa in Isa::available() {
        for (name, out_of_place, in_place) in funcs {
            // A NaN sentinel in every output slot proves each element is written.
            let sentinel = f32::from_bits(0x7fc0_dead);
            let mut ys = vec![sentinel; xs.len()];
            out_of_place(isa, &xs, &mut ys).expect("equal lengths on an available ISA");
            for (&x, &y) in xs.iter().zip(&ys) {
                check_element(name, isa, x, y);
            }
            let mut zs = xs.clone();
            in_place(isa, &mut zs).expect("available ISA");
            assert!(
                same_bits(&zs, &ys),
                "{name} {}: in place differs from out of place on {xs:?}",
                isa.name()
            );
            if xs.len() > 1 {
                // Shifted by one element: every lane assignment and tail length changes.
                let mut shifted = vec![sentinel; xs.len() - 1];
                out_of_place(isa, &xs[1..], &mut shifted).expect("equal lengths");
                assert!(
                    same_bits(&shifted, &ys[1..]),
                    "{name} {}: result depends on position, input {xs:?}",
                    isa.name()
                );
                for (k, &x) in xs.iter().enumerate().take(16) {
                    let mut one = [sentinel];
                    out_of_place(isa, &[x], &mut one).expect("equal lengths");
                    assert_eq!(
                        one[0].to_bits(),
                        ys[k].to_bits(),
                        "{name} {}: element {k} ({x:e}) alone differs",
                        isa.name()
                    );
                }
            }
            // A wrong output length is an error, never a panic.
            let mut short = vec![0.0f32; xs.len() + 1];
            assert!(
                out_of_place(isa, &xs, &mut short).is_err(),
                "{name}: length mismatch accepted"
            );
        }
    }
});
