//! Turning logits into the next token: repeat penalty, temperature, top-k, top-p, then a draw
//! from the candidate's own seeded RNG. Each candidate owns a `Sampler`, so its tokens depend
//! only on its seed and its own logits — the same whether it runs alone or among others.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings shared by all candidates of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<usize>,
    /// 1.0 = off. Divides positive logits (multiplies negative ones) of recent tokens.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens (prompt included, as llama.cpp) are penalized.
    pub repeat_last_n: usize,
}

pub struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
}

/// The seed of candidate `index` of a request seeded with `seed`. Candidate 0 keeps `seed`
/// itself, so a candidate regenerated alone with its own seed reproduces exactly; the others
/// get well-mixed seeds (splitmix64), never correlated streams.
pub fn candidate_seed(seed: u64, index: usize) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Sampler {
    pub fn new(cfg: SamplingConfig, seed: u64) -> Self {
        Sampler { cfg, rng: StdRng::seed_from_u64(seed) }
    }

    /// Picks the next token from `logits` given the sequence so far (`history`).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repeat_penalty(logits, history);
        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        // Probabilities in f64, candidates ordered by probability then id so ties are stable.
        let inv_t = 1.0 / self.cfg.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l as f64 - max) * inv_t).exp())).collect();
        let by_prob = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if let Some(k) = self.cfg.top_k.filter(|k| *k > 0 && *k < probs.len()) {
            probs.select_nth_unstable_by(k - 1, by_prob);
            probs.truncate(k);
        }
        let total: f64 = probs.iter().map(|p| p.1).sum();
        if self.cfg.top_p < 1.0 {
            // The nucleus nearly always lies in the top few hundred tokens: order those first
            // and sort the whole 49k vocabulary only when they do not reach top_p. Either way
            // the kept tokens and their order are those of a full sort (the order is total).
            const HEAD: usize = 256;
            let keep = if probs.len() > HEAD {
                probs.select_nth_unstable_by(HEAD - 1, by_prob);
                probs[..HEAD].sort_unstable_by(by_prob);
                nucleus_len(&probs[..HEAD], total, self.cfg.top_p)
            } else {
                None
            };
            let keep = keep.unwrap_or_else(|| {
                probs.sort_unstable_by(by_prob);
                nucleus_len(&probs, total, self.cfg.top_p).unwrap_or(probs.len())
            });
            probs.truncate(keep);
        } else {
            probs.sort_unstable_by(by_prob);
        }
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut target = self.rng.random::<f64>() * total;
        for &(id, p) in &probs {
            target -= p;
            if target < 0.0 {
                return id;
            }
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }

    fn apply_repeat_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.cfg.repeat_penalty;
        if penalty == 1.0 || self.cfg.repeat_last_n == 0 {
            return;
        }
        let start = history.len().saturating_sub(self.cfg.repeat_last_n);
        let mut seen = std::collections::HashSet::new();
        for &t in &history[start..] {
            if !seen.insert(t) {
                continue;
            }
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

/// How many of the (sorted) `probs` it takes to reach `top_p` of `total`; None if they don't.
fn nucleus_len(probs: &[(u32, f64)], total: f64, top_p: f64) -> Option<usize> {
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p.1 / total;
        if cum >= top_p {
            return Some(i + 1);
        }
    }
    None
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f64, top_p: f64, top_k: Option<usize>) -> SamplingConfig {
        SamplingConfig { temperature, top_p, top_k, repeat_penalty: 1.0, repeat_last_n: 64 }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(cfg(0.0, 1.0, None), 1);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(cfg(1.0, 1.0, Some(1)), 7);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        let mut s = Sampler::new(cfg(1.0, 0.5, None), 3);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [10.0, 0.0, 0.0, 0.0], &[]), 0);
        }
    }

    /// The plain algorithm: full sort, then nucleus, then the draw.
    fn full_sort_sample(rng: &mut StdRng, logits: &[f32], top_p: f64) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, (l as f64 - max).exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        probs.truncate(nucleus_len(&probs, total, top_p).unwrap_or(probs.len()));
        let mut target = rng.random::<f64>() * probs.iter().map(|p| p.1).sum::<f64>();
        for &(id, p) in &probs {
            target -= p;
            if target < 0.0 {
                return id;
            }
        }
        probs.last().unwrap().0
    }

    #[test]
    fn nucleus_fast_path_equals_full_sort() {
        let mut gen_rng = StdRng::seed_from_u64(99);
        for top_p in [0.3, 0.9, 0.999] {
            let mut fast = Sampler::new(cfg(1.0, top_p, None), 5);
            let mut slow = StdRng::seed_from_u64(5);
            for round in 0..100 {
                // Peaked and flat distributions, so both the head and the full-sort paths run.
                let scale = if round % 2 == 0 { 8.0 } else { 0.5 };
                let logits: Vec<f32> = (0..5000).map(|_| gen_rng.random::<f32>() * scale).collect();
                let want = full_sort_sample(&mut slow, &logits, top_p);
                assert_eq!(fast.sample(&mut logits.clone(), &[]), want, "top_p {top_p} round {round}");
            }
        }
    }

    #[test]
    fn repeat_penalty_discourages_seen_tokens() {
        let mut s = Sampler::new(SamplingConfig { repeat_penalty: 10.0, ..cfg(0.0, 1.0, None) }, 0);
        assert_eq!(s.sample(&mut [1.0, 2.0, 0.5], &[1]), 0);
    }

    #[test]
    fn same_seed_same_draws_and_seeds_differ() {
        let draw = |seed| {
            let mut s = Sampler::new(cfg(1.0, 1.0, None), seed);
            (0..30).map(|_| s.sample(&mut [1.0, 1.0, 1.0, 1.0], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        assert_eq!(candidate_seed(42, 0), 42);
        assert_ne!(candidate_seed(42, 1), candidate_seed(42, 2));
    }
}
