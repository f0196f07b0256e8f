//! Seeds. Every random draw of training is a pure function of (seed, epoch, sample), so a
//! resumed run repeats an uninterrupted one draw for draw.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The `sample` key of an epoch's batch order (no sample index reaches it).
const ORDER_SAMPLE_KEY: u64 = u64::MAX;

/// SplitMix-style mixing of the three keys into one 64-bit seed.
pub fn mix_seed(seed: u64, epoch: u64, sample: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ sample.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one sample's draws in one epoch.
pub fn sample_rng(seed: u64, epoch: u64, sample: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch, sample))
}

/// A seeded shuffle of `0..n` for one epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut sample_rng(seed, epoch, ORDER_SAMPLE_KEY));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 1, 2);
        assert_eq!(a, epoch_order(50, 1, 2));
        assert_ne!(a, epoch_order(50, 1, 3));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<i64>>());
    }

    #[test]
    fn keys_all_matter() {
        let base = mix_seed(1, 2, 3);
        assert_ne!(base, mix_seed(0, 2, 3));
        assert_ne!(base, mix_seed(1, 0, 3));
        assert_ne!(base, mix_seed(1, 2, 0));
    }
}
