//! Seeded Gaussian noise for the server.
//!
//! Noise is drawn on the server only (the clients never see it), from ChaCha20 seeded with a `u64`
//! and `rand_distr`'s ziggurat `StandardNormal`, scaled by the standard deviation. ChaCha20 is a
//! cryptographic generator, so the noise is not predictable from earlier outputs, and a
//! `(seed, stream)` pair is a reproducible, thread-independent sequence: a round's noise depends
//! only on its seed, never on how many threads trained the clients.
//!
//! Not a hardened DP implementation: floating-point Gaussian sampling has known side channels
//! (Mironov 2012, "On significance of the least significant bits for differential privacy"); this
//! is a simulator measuring utility under the paper's mechanism, not a production release.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// ChaCha20 stream for the per-coordinate value noise.
pub(crate) const VALUE_STREAM: u64 = 0;
/// ChaCha20 stream for the clipped-count noise of adaptive clipping (kept apart so that turning
/// adaptive clipping on does not shift the value noise of a seed).
pub(crate) const COUNT_STREAM: u64 = 1;

/// A reproducible stream of N(0, 1) draws.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
}

impl GaussianNoise {
    /// The noise stream `stream` of seed `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng }
    }

    /// One standard normal draw.
    pub fn standard(&mut self) -> f64 {
        StandardNormal.sample(&mut self.rng)
    }

    /// One N(0, stddev²) draw (exactly 0 without consuming randomness when `stddev == 0`, so that
    /// noise-free runs are bit-identical to plain averaging).
    pub fn sample(&mut self, stddev: f64) -> f64 {
        if stddev == 0.0 {
            0.0
        } else {
            stddev * self.standard()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_same_draws() {
        let a: Vec<f64> = {
            let mut n = GaussianNoise::new(42, VALUE_STREAM);
            (0..64).map(|_| n.sample(1.5)).collect()
        };
        let mut n = GaussianNoise::new(42, VALUE_STREAM);
        let b: Vec<f64> = (0..64).map(|_| n.sample(1.5)).collect();
        assert_eq!(a, b);
        let mut other_seed = GaussianNoise::new(43, VALUE_STREAM);
        let mut other_stream = GaussianNoise::new(42, COUNT_STREAM);
        assert_ne!(a[0], other_seed.sample(1.5));
        assert_ne!(a[0], other_stream.sample(1.5));
        assert_eq!(GaussianNoise::new(1, 0).sample(0.0), 0.0);
    }

    /// Moments of 400k standard normal draws. Tolerances are 6 standard errors (mean: 1/√n;
    /// variance: √(2/(n−1)); kurtosis-free since the data are Gaussian), so a failure means a
    /// broken generator, not bad luck (p ≈ 2e-9 per check, and the seed is fixed anyway).
    #[test]
    fn standard_normal_moments() {
        let n = 400_000usize;
        let mut g = GaussianNoise::new(7, VALUE_STREAM);
        let xs: Vec<f64> = (0..n).map(|_| g.standard()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let nf = n as f64;
        assert!(mean.abs() < 6.0 / nf.sqrt(), "mean {mean}");
        assert!(
            (var - 1.0).abs() < 6.0 * (2.0 / (nf - 1.0)).sqrt(),
            "variance {var}"
        );
        // Tail mass beyond 2σ: p = 0.0455, binomial standard error √(p(1−p)/n).
        let p = 0.045_500_263_896_358_4;
        let tail = xs.iter().filter(|x| x.abs() > 2.0).count() as f64 / nf;
        assert!(
            (tail - p).abs() < 6.0 * (p * (1.0 - p) / nf).sqrt(),
            "tail {tail}"
        );
    }
}
