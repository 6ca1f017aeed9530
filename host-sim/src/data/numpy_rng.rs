//! numpy's legacy `RandomState` shuffle, bit for bit.
//!
//! The reference pipelines (the TFF tutorial and the paper's code, see docs/SEMANTICS.md) shuffle users and
//! each user's ratings with `np.random.seed(42); np.random.shuffle(list)`. Reproducing their client
//! splits exactly needs the same generator (MT19937 seeded by `init_genrand`) and the same
//! Fisher-Yates walk with numpy's masked-rejection `random_interval`.

/// Mersenne Twister MT19937 as numpy's legacy `RandomState(seed)` seeds and steps it.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

impl Mt19937 {
    /// Seeds like `np.random.RandomState(seed)` for an integer seed (`init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    /// Regenerates the whole state block (the classic `genrand` twist).
    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// Next tempered 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Uniform integer in `0..=max` by numpy's legacy `random_interval`: draw 32-bit outputs,
    /// mask to the smallest all-ones mask covering `max`, reject values above `max`.
    pub fn random_interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// Shuffles in place exactly like numpy's legacy `RandomState.shuffle` (same swaps, same draws).
    ///
    /// # Panics
    /// If the slice is longer than `u32::MAX + 1` elements (numpy would switch to 64-bit draws).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        assert!(
            items.len() <= u32::MAX as usize + 1,
            "shuffle supports at most 2^32 elements"
        );
        for i in (1..items.len()).rev() {
            let j = self.random_interval(i as u32) as usize;
            items.swap(i, j);
        }
    }
}

/// `np.random.RandomState(seed).shuffle(items)`: a fresh generator per call, as the reference code
/// re-seeds before every shuffle.
pub fn shuffle_with_seed<T>(seed: u32, items: &mut [T]) {
    Mt19937::new(seed).shuffle(items);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permutation(n: usize, seed: u32) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        shuffle_with_seed(seed, &mut v);
        v
    }

    /// First raw outputs of `RandomState(42)`; from numpy 2.4
    /// `[int(r.randint(0, 2**32, dtype=np.uint32)) for _ in range(5)]`.
    #[test]
    fn raw_outputs_match_numpy() {
        let mut rng = Mt19937::new(42);
        let got: Vec<u32> = (0..5).map(|_| rng.next_u32()).collect();
        assert_eq!(
            got,
            [1608637542, 3421126067, 4083286876, 787846414, 3143890026]
        );
    }

    /// Expected permutations came from numpy 2.4 `l = list(range(n));
    /// np.random.RandomState(42).shuffle(l)` (the legacy shuffle is unchanged since numpy 1.x).
    #[test]
    fn small_permutations_match_numpy() {
        assert_eq!(permutation(0, 42), Vec::<usize>::new());
        assert_eq!(permutation(1, 42), [0]);
        assert_eq!(permutation(2, 42), [1, 0]);
        assert_eq!(permutation(3, 42), [0, 1, 2]);
        assert_eq!(permutation(5, 42), [1, 4, 2, 0, 3]);
        assert_eq!(permutation(10, 42), [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
        assert_eq!(
            permutation(20, 42),
            [
                0, 17, 15, 1, 8, 5, 11, 3, 18, 16, 13, 2, 9, 19, 4, 12, 7, 10, 14, 6
            ]
        );
        assert_eq!(
            permutation(53, 42),
            [
                19, 41, 47, 12, 43, 5, 17, 50, 3, 32, 13, 8, 26, 6, 34, 4, 37, 24, 44, 33, 49, 15,
                9, 16, 30, 36, 25, 11, 0, 46, 27, 31, 39, 29, 45, 1, 21, 2, 40, 35, 23, 48, 10, 22,
                18, 52, 20, 7, 42, 14, 28, 51, 38
            ]
        );
    }

    /// Large permutations (the user lists of the presets) against numpy 2.4
    /// `RandomState(42).shuffle(list(range(n)))`: head, tail and `sum(i * l[i])`.
    #[test]
    fn large_permutations_match_numpy() {
        let cases: [(usize, [usize; 12], [usize; 5], u64); 3] = [
            (
                300,
                [203, 266, 152, 9, 233, 226, 196, 109, 5, 175, 237, 57],
                [188, 71, 106, 270, 102],
                6_757_939,
            ),
            (
                2000,
                [
                    1860, 353, 1333, 905, 1289, 1273, 938, 1731, 65, 1323, 56, 1292,
                ],
                [1130, 1294, 860, 1459, 1126],
                2_008_348_118,
            ),
            (
                6040,
                [
                    5529, 710, 4923, 2153, 1272, 2316, 2094, 3127, 742, 296, 3694, 1142,
                ],
                [3772, 5191, 5226, 5390, 860],
                55_538_886_513,
            ),
        ];
        for (n, head, tail, weighted_sum) in cases {
            let p = permutation(n, 42);
            assert_eq!(p[..12], head, "n = {n}");
            assert_eq!(p[n - 5..], tail, "n = {n}");
            let sum: u64 = p.iter().enumerate().map(|(i, &v)| (i * v) as u64).sum();
            assert_eq!(sum, weighted_sum, "n = {n}");
        }
    }

    /// Another seed and a length past the 624-word state block; numpy 2.4
    /// `a = np.arange(70000); np.random.RandomState(7).shuffle(a); a[:8]`.
    #[test]
    fn other_seed_matches_numpy() {
        assert_eq!(
            permutation(70_000, 7)[..8],
            [7653, 66274, 9119, 10760, 43166, 24247, 3682, 37283]
        );
    }
}
