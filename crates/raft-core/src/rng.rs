//! The engine's only source of randomness: a SplitMix64 generator seeded
//! from [`Config::rng_seed`](crate::Config::rng_seed).
//!
//! Why hand-written instead of `rand`: the engine needs exactly one thing
//! (a uniform number in a small range for election timeouts), must be
//! bit-for-bit reproducible across platforms and crate versions, and must
//! never touch OS entropy. SplitMix64 is ten lines, passes BigCrush, and its
//! output is fixed by its definition, not by a library's version.

#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`; `hi > lo`. The modulo bias is below 2^-32 for
    /// the small ranges used here, which is irrelevant for timeouts.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(hi > lo);
        lo + (self.next_u64() % u64::from(hi - lo)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_range_respected() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        let mut c = SplitMix64::new(8);
        let differs = (0..100).any(|_| a.next_u64() != c.next_u64());
        assert!(differs);
    }
}
