//! Every `core::arch` intrinsic of the kernels inlines into its `#[target_feature]` caller, under
//! the profile this crate is built with: the default one, which is what a crate linking this one
//! usually builds it with (see `Cargo.toml`).
//!
//! An intrinsic that is not inlined is compiled as a function of its own and called, once per
//! vector operation, from code that then also loses its registers across the call. That
//! happened: `core::array::from_fn` in the step GEMM's micro-kernel handed its closure through
//! std frames without `#[target_feature]`, and under the default profile (16 codegen units, no
//! LTO) the AVX2 step GEMM ran at 12 instead of 110 GFLOP/s, while the benches, built then with
//! one codegen unit and LTO, showed nothing.
//!
//! The proof read here is the test binary's own symbol table: an intrinsic left out of line
//! has a symbol `core::core_arch::x86::<module>::<name>` in it; inlined ones have none. The test
//! first runs every f32 kernel on every path (all cells, forward and backward, one and two
//! threads, the streaming step, the activation slices), so that the linker keeps their code.

use fused_rnn::Direction;
use fused_rnn::{CellKind, FinalState, InitialState, Isa, Layer, Mode, StreamingLayer};

/// Runs every f32 kernel entry on `isa`, so that its code is linked into this binary.
fn run_every_kernel(isa: Isa) {
    for threads in [1, 2] {
        for cell in CellKind::ALL {
            // Big enough for the two-thread paths (row shards, hidden-unit slices, split weight
            // gradients) to be taken.
            for (t, b, i, h) in [(3, 2, 40, 300), (3, 24, 16, 64)] {
                let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 5).unwrap();
                layer.set_isa(isa).unwrap();
                layer.set_threads(threads).unwrap();
                let x = vec![0.25f32; t * b * i];
                let dy = vec![0.5f32; t * b * h];
                let (y, dx, _) = testkit::oracle::training_pass(&layer, &x, &dy, t, b);
                assert!(fused_rnn::all_finite(&y) && fused_rnn::all_finite(&dx));
                let mut stream = StreamingLayer::new(layer, b).unwrap();
                for _ in 0..3 {
                    stream.step(&x[..b * i]).unwrap();
                }
            }
            // Batch-1 inference long enough for the split pass to fold the projection into
            // the steps (AVX-512).
            let (t, i, h) = (16, 40, 300);
            let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 5).unwrap();
            layer.set_isa(isa).unwrap();
            layer.set_threads(threads).unwrap();
            let mut ws = layer.workspace(t, 1, Mode::Inference).unwrap();
            let x = vec![0.25f32; t * i];
            let mut y = vec![0.0f32; t * h];
            layer
                .forward(
                    &mut ws,
                    Direction::Forward,
                    &x,
                    InitialState::default(),
                    &mut y,
                    FinalState::default(),
                )
                .unwrap();
            assert!(fused_rnn::all_finite(&y));
        }
    }
    let input: Vec<f32> = (0..100).map(|k| k as f32 / 10.0 - 5.0).collect();
    let mut out = vec![0.0f32; 100];
    fused_rnn::activation::sigmoid(isa, &input, &mut out).unwrap();
    fused_rnn::activation::tanh(isa, &input, &mut out).unwrap();
    fused_rnn::activation::sigmoid_in_place(isa, &mut out).unwrap();
    fused_rnn::activation::tanh_in_place(isa, &mut out).unwrap();
}

/// The names of the function symbols in the ELF64 (little-endian) file `elf`, from its `.symtab`.
/// (Not a byte search of the whole file: the debug info names inlined functions too.)
fn function_symbols(elf: &[u8]) -> Vec<&[u8]> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a little-endian ELF64 file"
    );
    // Section headers: offset e_shoff, e_shnum of them, e_shentsize bytes each.
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    let section = |i: usize| shoff + i * shentsize;
    const SHT_SYMTAB: usize = 2;
    const STT_FUNC: u8 = 2;
    let mut names = Vec::new();
    for i in 0..shnum {
        let sh = section(i);
        if u32_at(sh + 4) != SHT_SYMTAB {
            continue;
        }
        let (off, size, entsize) = (u64_at(sh + 0x18), u64_at(sh + 0x20), u64_at(sh + 0x38));
        // sh_link: the string table of the names.
        let strtab = u64_at(section(u32_at(sh + 0x28)) + 0x18);
        for sym in (off..off + size).step_by(entsize) {
            if elf[sym + 4] & 0xf != STT_FUNC {
                continue;
            }
            let name = &elf[strtab + u32_at(sym)..];
            let len = name.iter().position(|&c| c == 0).unwrap();
            names.push(&name[..len]);
        }
    }
    names
}

/// `x86::avx::_mm256_loadu_ps` for a symbol `..4core9core_arch3x863avx15__mm256_loadu_ps..`
/// (v0 mangling; the legacy one spells the path the same way, without the `_` separator), or
/// `None` if the symbol is not a `core::arch` function.
fn core_arch_path(symbol: &[u8]) -> Option<String> {
    const PATH: &[u8] = b"4core9core_arch";
    let at = symbol.windows(PATH.len()).position(|w| w == PATH)? + PATH.len();
    // Then length-prefixed identifiers: the arch (`x86`), the module, the function.
    let mut idents = Vec::new();
    let mut p = at;
    while idents.len() < 3 {
        let digits = symbol[p..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let Some(len) = std::str::from_utf8(&symbol[p..p + digits])
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
        else {
            break;
        };
        // v0 mangling separates an identifier that starts with `_` or a digit by one `_`.
        let mut start = p + digits;
        if symbol.get(start) == Some(&b'_') && symbol.get(start + 1) == Some(&b'_') {
            start += 1;
        }
        let Some(ident) = symbol.get(start..start + len) else {
            break;
        };
        idents.push(String::from_utf8_lossy(ident).into_owned());
        p = start + len;
    }
    Some(idents.join("::"))
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "inlining needs an optimised build: cargo test --release"
)]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn every_intrinsic_inlines_into_its_kernel() {
    let fast = Isa::detect();
    if fast == Isa::Portable {
        println!("no AVX2+FMA on this CPU: only the portable path exists, nothing to check");
        return;
    }
    for isa in Isa::available() {
        run_every_kernel(isa);
    }
    let exe = std::env::current_exe().unwrap();
    let binary = std::fs::read(&exe).unwrap();
    let symbols = function_symbols(&binary);
    // The check is only as good as the symbol table: make sure there is one, by finding the
    // f32 kernels' dispatch trait (an inlined function leaves no symbol; these are called).
    assert!(
        symbols
            .iter()
            .any(|s| s.windows(11).any(|w| w == b"StepKernels")),
        "{} has no symbol table (stripped?): nothing to check",
        exe.display()
    );
    let mut out_of_line: Vec<String> = symbols
        .iter()
        .filter_map(|s| core_arch_path(s))
        // std's run-time feature detection reads XCR0 with `_xgetbv`, out of line in std itself.
        .filter(|s| !s.starts_with("x86::xsave::"))
        .collect();
    out_of_line.sort();
    out_of_line.dedup();
    assert!(
        out_of_line.is_empty(),
        "intrinsics compiled out of line, so called instead of inlined into the kernels: {out_of_line:?}"
    );
}

#[test]
fn the_symbol_scan_reads_both_manglings() {
    assert_eq!(
        core_arch_path(b"_RNvNtNtNtCsgEmfK2I1SDS_4core9core_arch3x863avx15__mm256_loadu_ps")
            .as_deref(),
        Some("x86::avx::_mm256_loadu_ps")
    );
    assert_eq!(
        core_arch_path(b"_ZN4core9core_arch6x86_645xsave7_xgetbv17h0123456789abcdefE").as_deref(),
        Some("x86_64::xsave::_xgetbv")
    );
    assert_eq!(
        core_arch_path(b"_ZN9fused_rnn10activation7sigmoid17h0123456789abcdefE"),
        None
    );
}
