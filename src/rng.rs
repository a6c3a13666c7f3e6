//! SplitMix64: the small, well-mixed seeded generator behind initial weights, the data order and
//! the CPU data augmentation (portable; the same seed gives the same numbers everywhere), and a
//! stable hash.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A seed for item `index` of stream `stream` under `seed`: independent, well-mixed seeds for
/// per-image augmentation that do not depend on which thread or batch handles the image.
pub fn item_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut g = SplitMix64(seed ^ stream.wrapping_mul(0xA24BAED4963EE407));
    let a = g.next_u64();
    SplitMix64(a ^ index.wrapping_mul(0x9FB21C651E98DF25)).next_u64()
}

/// 64-bit FNV-1a of `bytes`: a hash that never changes between Rust releases or platforms (for
/// file names and for comparing values across processes), unlike std's hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
