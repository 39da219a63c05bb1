#!/usr/bin/env python3
"""Fits the polynomial coefficients and thresholds of fused-rnn's f32 sigmoid and tanh.

Run: python3 tools/fit_activations.py   (needs mpmath: `pip install mpmath`)

Prints Rust constants for `src/kernels/activation_consts.rs`.

Method: near-minimax fits of the *relative* error by Lawson's algorithm (iteratively
reweighted least squares on Chebyshev nodes), in 40-digit arithmetic (mpmath). The
coefficients are then rounded to f32 and the relative error of the polynomial with the
rounded coefficients (evaluated exactly, i.e. without f32 evaluation rounding) is reported.

Forms:
  R is slightly above ln2/2, so that an argument reduction whose n = round(z*log2e) is off by
  rounding is still covered.
  sigmoid's exp: e^z = 2^(m/8) e^r with m = round(8 z log2 e), r = z - m ln2/8; 2^(m/8) is
        2^floor(m/8) times a table entry 2^(k/8) (k = m mod 8, rounded to f32), and
        e^r ~= 1 + r + r^2*(S2 + S3 r) (degree DEG_EXP8) on |r| <= R/8.
  tanh: tanh(a) = -E/(2 + E) with E = e^(-2a) - 1 = 2^n (e^(2h) - 1) + (2^n - 1), where
        n = round(-2a log2 e) and h = -a - n ln2/2; the fit is
        e^(2h) - 1 ~= 2h + h^2*(E2 + E3 h + ...) (degree DEG_TANH_EM1, leading 2h exact) on
        |h| <= R/2, with the relative error minimised (so E is accurate near a = 0 too).
"""
import struct

import mpmath as mp

mp.mp.dps = 40

EXP_R = mp.mpf("0.3466")  # > ln2/2 = 0.34657359...
DEG_EXP8 = 3  # total degree of sigmoid's e^r polynomial after the 8-entry table reduction
DEG_TANH_EM1 = 6  # total degree of the e^(2h) - 1 polynomial
NODES = 240
LAWSON_ITERS = 40


def f32(x):
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def f32_from_bits(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def rust_lit(x):
    """Shortest decimal literal that round-trips to the f32 value x."""
    x = f32(x)
    for d in range(1, 10):
        s = "%.*e" % (d - 1, x)
        if f32(float(s)) == x:
            mant, exp = s.split("e")
            e = int(exp)
            if -5 <= e <= 6:
                s = repr(float(s))
            else:
                s = mant + "e" + str(e)
            if "." not in s and "e" not in s:
                s += ".0"
            return s
    raise ValueError(x)


def lawson(basis, target, weight, xs):
    """Minimises max_i |weight(x_i) * (sum_k c_k basis_k(x_i) - target(x_i))| approximately."""
    n = len(xs)
    w = [mp.mpf(1) / n] * n
    rows = [[weight(x) * b(x) for b in basis] for x in xs]
    rhs = [weight(x) * target(x) for x in xs]
    coef = None
    for _ in range(LAWSON_ITERS):
        sw = [mp.sqrt(wi) for wi in w]
        a = mp.matrix([[sw[i] * v for v in rows[i]] for i in range(n)])
        b = mp.matrix([sw[i] * rhs[i] for i in range(n)])
        coef, _ = mp.qr_solve(a, b)
        err = [abs(sum(coef[k] * rows[i][k] for k in range(len(basis))) - rhs[i]) for i in range(n)]
        tot = sum(w[i] * err[i] for i in range(n))
        w = [w[i] * err[i] / tot for i in range(n)]
    return [coef[k] for k in range(len(basis))]


def cheb_nodes(lo, hi, n):
    return [
        (lo + hi) / 2 + (hi - lo) / 2 * mp.cos(mp.pi * (2 * i + 1) / (2 * n)) for i in range(n)
    ]


def max_rel(f, g, xs):
    return max(abs(f(x) / g(x) - 1) for x in xs if g(x) != 0)


def fit_exp8():
    rmax = EXP_R / 8
    xs = [x for x in cheb_nodes(-rmax, rmax, NODES) if x != 0]
    basis = [(lambda k: (lambda r: r ** (k + 2)))(k) for k in range(DEG_EXP8 - 1)]
    coef = lawson(basis, lambda r: mp.exp(r) - 1 - r, lambda r: 1 / mp.exp(r), xs)
    c32 = [f32(c) for c in coef]

    def p(r):
        return 1 + r + sum(mp.mpf(c32[k]) * r ** (k + 2) for k in range(DEG_EXP8 - 1))

    dense = [-rmax + 2 * rmax * i / 20000 for i in range(20001)]
    return c32, max_rel(p, mp.exp, dense)


def exp2_table():
    """For k in 0..8: the bits of 2^(k/8) rounded to f32, minus 127 << 23 and k << 20, so that
    adding the entry to (m + 1016) << 20 (k in bits 20..22, floor(m/8) + 127 above) gives the
    bits of 2^floor(m/8) * f32(2^(k/8)). Also the largest relative rounding error."""
    adj, err = [], 0
    for k in range(8):
        t = f32(mp.mpf(2) ** (mp.mpf(k) / 8))
        adj.append(f32_bits(t) - (127 << 23) - (k << 20))
        err = max(err, abs(mp.mpf(t) / mp.mpf(2) ** (mp.mpf(k) / 8) - 1))
    return adj, err


def fit_tanh_em1():
    hmax = EXP_R / 2
    xs = [x for x in cheb_nodes(-hmax, hmax, NODES) if x != 0]
    basis = [(lambda k: (lambda h: h ** (k + 2)))(k) for k in range(DEG_TANH_EM1 - 1)]
    coef = lawson(
        basis, lambda h: mp.exp(2 * h) - 1 - 2 * h, lambda h: 1 / (mp.exp(2 * h) - 1), xs
    )
    c32 = [f32(c) for c in coef]

    def p(h):
        return 2 * h + sum(mp.mpf(c32[k]) * h ** (k + 2) for k in range(DEG_TANH_EM1 - 1))

    dense = [-hmax + 2 * hmax * i / 20000 for i in range(20001) if i != 10000]
    return c32, max_rel(p, lambda h: mp.exp(2 * h) - 1, dense)


def thresholds():
    ln2 = mp.log(2)
    # Sigmoid: the smallest-magnitude-rounded f32 z with e^z >= 2^-126 (smallest normal).
    lnmin = mp.log(mp.mpf(2) ** -126)
    z = f32(lnmin)
    if mp.mpf(z) < lnmin:  # round toward zero so e^z stays normal
        z = f32_from_bits(f32_bits(z) - 1)
    assert mp.exp(mp.mpf(z)) >= mp.mpf(2) ** -126
    # Tanh: the first f32 x > 0 whose correctly rounded tanh is 1.0f32.
    x = f32(9.0)
    while f32(mp.tanh(mp.mpf(x))) == 1.0:
        x = f32_from_bits(f32_bits(x) - 1)
    while f32(mp.tanh(mp.mpf(x))) != 1.0:
        x = f32_from_bits(f32_bits(x) + 1)
    # ln2/8 split so that m * LN2_8_HI is exact for |m| < 2^10 (m is at most 1008).
    ln2_8_hi = f32_from_bits(f32_bits(ln2 / 8) & ~((1 << 10) - 1))
    ln2_8_lo = f32(ln2 / 8 - mp.mpf(ln2_8_hi))
    return z, x, ln2_8_hi, ln2_8_lo


def main():
    ct, et = fit_tanh_em1()
    zmin, tanh_one, ln2_8_hi, ln2_8_lo = thresholds()
    c8, e8 = fit_exp8()
    adj, terr = exp2_table()
    print("// Generated by tools/fit_activations.py; do not edit by hand.")
    print(f"// Sigmoid: e^r ~= 1 + r + r^2*(S2 + r*S3) on |r| <= {mp.nstr(EXP_R / 8, 6)}: max relative error")
    print(f"// {mp.nstr(e8, 3)} with the f32-rounded coefficients (2^{mp.nstr(mp.log(e8, 2), 3)}).")
    for k, c in enumerate(c8):
        print(f"pub(crate) const EXP8_S{k + 2}: f32 = {rust_lit(c)};")
    print("/// Bits of f32(2^(k/8)) - (127 << 23) - (k << 20), k = 0..8 (max relative rounding error")
    print(f"/// of the entries {mp.nstr(terr, 3)}); see `sigmoid`.")
    print("pub(crate) const EXP2_K8_ADJ: [i32; 8] = [" + ", ".join(str(a) for a in adj) + "];")
    print("/// ln2/8 = LN2_8_HI + LN2_8_LO; LN2_8_HI has 14 significant bits, so m * LN2_8_HI is exact.")
    print(f"pub(crate) const LN2_8_HI: f32 = {rust_lit(ln2_8_hi)}; // 0x{f32_bits(ln2_8_hi):08x}")
    print(f"pub(crate) const LN2_8_LO: f32 = {rust_lit(ln2_8_lo)}; // 0x{f32_bits(ln2_8_lo):08x}")
    print(f"// e^(2h) - 1 ~= 2h + h^2*(E2 + h*(E3 + ...)) on |h| <= {mp.nstr(EXP_R / 2, 6)}: max relative")
    print(f"// error {mp.nstr(et, 3)} with the f32-rounded coefficients (2^{mp.nstr(mp.log(et, 2), 3)}).")
    for k, c in enumerate(ct):
        print(f"pub(crate) const TANH_E{k + 2}: f32 = {rust_lit(c)};")
    print("/// ln(2) / 2, rounded to f32 (tanh's reduction is one step: its n is at most 26 in")
    print("/// magnitude and only the e^(2h) of small n needs full relative accuracy).")
    print(f"pub(crate) const HALF_LN2: f32 = {rust_lit(mp.log(2) / 2)}; // 0x{f32_bits(mp.log(2) / 2):08x}")
    print("/// The f32 nearest ln(2^-126) toward zero: e^z is normal for z >= EXP_Z_MIN; below it")
    print("/// sigmoid returns exactly 0 (no subnormal outputs or intermediates).")
    print(f"pub(crate) const EXP_Z_MIN: f32 = {rust_lit(zmin)}; // 0x{f32_bits(zmin):08x}")
    print("/// The first f32 x > 0 whose correctly rounded tanh is 1.0f32; tanh returns exactly")
    print("/// ±1 from there on.")
    print(f"pub(crate) const TANH_ONE_FROM: f32 = {rust_lit(tanh_one)}; // 0x{f32_bits(tanh_one):08x}")


if __name__ == "__main__":
    main()
