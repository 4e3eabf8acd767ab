//! The engine's only source of randomness: a SplitMix64 generator seeded
//! from [`Config::rng_seed`](crate::Config::rng_seed). Public so that the
//! other crates' deterministic pieces (the simulated disk, the simulator,
//! the load generator) share this one definition.
//!
//! Why hand-written instead of `rand`: the engine needs exactly one thing
//! (a uniform number in a small range for election timeouts), must be
//! bit-for-bit reproducible across platforms and crate versions, and must
//! never touch OS entropy. SplitMix64 is ten lines, passes BigCrush, and its
//! output is fixed by its definition, not by a library's version.

#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is decided by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`; `hi > lo`. The modulo bias is below 2^-32 for
    /// the small ranges used here, which is irrelevant for timeouts.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(hi > lo);
        lo + (self.next_u64() % u64::from(hi - lo)) as u32
    }

    /// Uniform in `[0, 1)`, from the top 53 bits (an f64's mantissa).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64)
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
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[(a.next_u64() % 10) as usize] += 1;
            assert!((0.0..1.0).contains(&a.unit()));
        }
        assert!(
            buckets.iter().all(|b| (9_000..11_000).contains(b)),
            "{buckets:?}"
        );
    }
}
