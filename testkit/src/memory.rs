//! What the machine's memory allows: for tests that ask for absurd sizes.

/// Whether this machine's kernel refuses a single allocation of `bytes` outright, so that a
/// test may ask for it without the risk of being granted it (and then writing to it).
///
/// Linux only, from `/proc`: with `vm.overcommit_memory = 0` (heuristic) a request larger than
/// RAM + swap is refused, with 2 (strict) one larger than the commit limit; with 1 (always)
/// anything up to the address space is granted, so this says `false`. Requires twice the
/// limit, as a margin. `false` wherever it cannot tell.
pub fn kernel_refuses_allocation(bytes: usize) -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let kib = |key: &str| -> Option<u128> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let limit_kib = match read("/proc/sys/vm/overcommit_memory").trim() {
        "0" => kib("MemTotal:").zip(kib("SwapTotal:")).map(|(m, s)| m + s),
        "2" => kib("CommitLimit:"),
        _ => None,
    };
    limit_kib.is_some_and(|l| bytes as u128 > 2 * 1024 * l)
}
