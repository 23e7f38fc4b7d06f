//! Whether a creation was made inside a one-time initializer, told from its unresolved record,
//! so that the settle loop can classify a process global at once instead of waiting out its
//! budget first.
//!
//! Classifying a creation means resolving its addresses, and the first resolution of a process
//! loads the debug info (0.5 s to seconds), so the settle loop resolves nothing it does not
//! have to. But a test that makes a global pool (rayon's, in a `OnceLock` of the user's) is
//! above its baseline for good: it would wait out the whole budget and pay for the resolution
//! after it. What this module tells cheaply is "made inside an initializer": std's `Once`,
//! `OnceLock` and `LazyLock` (and `lazy_static`, built on `Once`) all run the initializer from
//! one non-generic function of std, `Once::call` of the platform's `Once`, through a
//! `dyn FnMut`, so every initializer's stack holds the same return address in it. This module
//! finds that address in its own process, without a symbol: two initializers of different
//! kinds and a plain call, from one function, each capture their raw stack; the addresses the
//! two initializers share and the plain call lacks are std's. A record that holds one is worth
//! resolving while settling (a check pays that resolution anyway once such an item is above
//! its baseline); the resolved frames still decide whether it is a global.
//!
//! Where no such address is found (std inlined into the initializers by LTO or
//! `-Zbuild-std`, a check run from inside an initializer), nothing changes: the creation is
//! classified after settling. `once_cell`'s cells run their own code, one copy per version, and
//! are classified after settling too.

use std::sync::{Once, OnceLock};

/// How deep a probe's stack is captured: the initializer's frames are a few calls in.
const DEPTH: usize = 64;

/// The return addresses inside std's initializer machinery, once found.
static FOUND: OnceLock<Box<[usize]>> = OnceLock::new();

/// Whether a creation recorded as `ips` (return addresses, innermost first) ran inside std's
/// `Once`, `OnceLock` or `LazyLock` initializer. Cheap: no address is resolved. `false` where
/// the machinery's address could not be told in this process.
pub(crate) fn made_in_initializer(ips: &[usize]) -> bool {
    let inside = addresses();
    !inside.is_empty() && ips.iter().any(|ip| inside.contains(ip))
}

/// The addresses, found the first time they are asked for. Found outside any `Once`: the probe
/// must not run inside an initializer of its own (its plain call would hold the address too),
/// so a probe that finds nothing is tried again next time rather than kept.
fn addresses() -> &'static [usize] {
    if let Some(found) = FOUND.get() {
        return found;
    }
    let found = probe();
    if found.is_empty() {
        return &[];
    }
    let _ = FOUND.set(found.into_boxed_slice());
    FOUND.get().map_or(&[], |found| found)
}

/// Return addresses, innermost first, of whoever calls it.
#[inline(never)]
fn stack() -> Vec<usize> {
    let mut ips = Vec::with_capacity(DEPTH);
    backtrace::trace(|frame| {
        ips.push(frame.ip() as usize);
        ips.len() < DEPTH
    });
    ips
}

/// The addresses that a `Once` initializer's stack and a `OnceLock` initializer's stack share
/// and a plain call's stack, from the same function, lacks.
#[inline(never)]
fn probe() -> Vec<usize> {
    let mut in_once = Vec::new();
    Once::new().call_once(|| in_once = stack());
    let lock = OnceLock::new();
    let in_lock: &Vec<usize> = lock.get_or_init(stack);
    let plain = stack();
    in_once
        .into_iter()
        .filter(|ip| in_lock.contains(ip) && !plain.contains(ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    #[test]
    fn a_stack_inside_any_std_initializer_is_told_and_a_plain_one_is_not() {
        assert!(!addresses().is_empty(), "the probe found no address");
        let plain = stack();
        assert!(
            !made_in_initializer(&plain),
            "a plain call read as an initializer"
        );

        let mut in_once = Vec::new();
        Once::new().call_once(|| in_once = stack());
        assert!(made_in_initializer(&in_once), "Once::call_once");

        let mut forced = Vec::new();
        Once::new().call_once_force(|_| forced = stack());
        assert!(made_in_initializer(&forced), "Once::call_once_force");

        let lock: OnceLock<Vec<usize>> = OnceLock::new();
        assert!(made_in_initializer(lock.get_or_init(stack)), "OnceLock");

        let lazy: LazyLock<Vec<usize>> = LazyLock::new(stack);
        assert!(made_in_initializer(&lazy), "LazyLock");

        // From another thread, deeper in: still the same address.
        let nested = std::thread::spawn(|| {
            let lazy: LazyLock<Vec<usize>> =
                LazyLock::new(|| (0..1).flat_map(|_| stack()).collect());
            lazy.clone()
        })
        .join()
        .unwrap();
        assert!(made_in_initializer(&nested), "LazyLock on another thread");
        assert!(!made_in_initializer(
            &std::thread::spawn(stack).join().unwrap()
        ));
    }
}
