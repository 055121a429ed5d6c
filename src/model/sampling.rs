//! Turning logits into the next token: repeat penalty, temperature, top-k, top-p, then a draw
//! from the candidate's own seeded RNG. Each candidate owns a `Sampler`, so its tokens depend
//! only on its seed and its own logits — the same whether it runs alone or among others.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::simd::{exp_f32, simd_fn};

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
    /// The relative probabilities of the last draw, kept for the next (a vocabulary's worth).
    probs: Vec<f32>,
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
        Sampler { cfg, rng: StdRng::seed_from_u64(seed), probs: Vec::new() }
    }

    /// Picks the next token from `logits` given the sequence so far (`history`).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repeat_penalty(logits, history);
        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        // Each token's probability relative to the most likely one's (which is 1), in f32 on the
        // vector units: the full vocabulary goes through this at every token of every candidate,
        // and with f64 `exp` one call at a time it was 0.4 ms a token (49k tokens), a sixth of
        // decoding four candidates together.
        let mut probs = std::mem::take(&mut self.probs);
        probs.resize(logits.len(), 0.0);
        scaled_exps(logits, max_of(logits), (1.0 / self.cfg.temperature) as f32, &mut probs);
        let kept = self.kept(&probs);
        self.probs = probs;
        let total: f64 = kept.iter().map(|p| f64::from(p.1)).sum();
        let mut target = self.rng.random::<f64>() * total;
        for &(id, p) in &kept {
            target -= f64::from(p);
            if target < 0.0 {
                return id;
            }
        }
        kept.last().map(|p| p.0).unwrap_or(0)
    }

    /// The tokens the draw picks from, in the order it walks them: with top-k or top-p, the most
    /// probable first (ties by id); otherwise every token in id order.
    fn kept(&self, probs: &[f32]) -> Vec<(u32, f32)> {
        let top_p = self.cfg.top_p < 1.0;
        let pairs = || probs.iter().enumerate().map(|(i, &p)| (i as u32, p));
        if let Some(k) = self.cfg.top_k.filter(|k| *k > 0 && *k < probs.len()) {
            let mut head: Vec<(u32, f32)> = pairs().collect();
            head.select_nth_unstable_by(k - 1, by_prob);
            head.truncate(k);
            head.sort_unstable_by(by_prob);
            if top_p {
                let total = head.iter().map(|p| f64::from(p.1)).sum();
                head.truncate(nucleus_len(&head, total, self.cfg.top_p).unwrap_or(k));
            }
            return head;
        }
        if !top_p {
            return pairs().collect();
        }
        // The nucleus nearly always lies among the tokens within a few thousandths of the most
        // likely one. Those are a prefix of the full order (every token left out is less likely
        // than every one kept), so when they reach top-p the nucleus is the one a sort of the
        // whole vocabulary gives; otherwise (a flat distribution) the whole vocabulary is sorted.
        let total = lane_sum(probs);
        let mut head: Vec<(u32, f32)> = pairs().filter(|p| p.1 >= HEAD_FLOOR).collect();
        head.sort_unstable_by(by_prob);
        if let Some(n) = nucleus_len(&head, total, self.cfg.top_p) {
            head.truncate(n);
            return head;
        }
        let mut all: Vec<(u32, f32)> = pairs().collect();
        all.sort_unstable_by(by_prob);
        let n = nucleus_len(&all, total, self.cfg.top_p).unwrap_or(all.len());
        all.truncate(n);
        all
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

/// Relative probabilities below this (about 2.4e-4 of the most likely token's) are looked at only
/// when the tokens above it do not reach top-p.
const HEAD_FLOOR: f32 = 1.0 / 4096.0;

/// More probable first; equal probabilities by id, so the order is total and stable.
fn by_prob(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// How many of the (sorted) `probs` it takes to reach `top_p` of `total`; None if they don't.
fn nucleus_len(probs: &[(u32, f32)], total: f64, top_p: f64) -> Option<usize> {
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += f64::from(p.1) / total;
        if cum >= top_p {
            return Some(i + 1);
        }
    }
    None
}

/// The largest logit (in lanes, so it vectorizes; the same value in any order).
fn max_of(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    lanes.into_iter().fold(tail, f32::max)
}

simd_fn! {
    /// `out[i] = exp((logits[i] - max) * inv_t)`: each token's probability relative to the most
    /// likely one's. The same bits on every instruction set (`exp_f32` is one formula without fused
    /// multiply-adds).
    fn scaled_exps(logits: &[f32], max: f32, inv_t: f32, out: &mut [f32]) {
        for (o, &l) in out.iter_mut().zip(logits) {
            *o = exp_f32((l - max) * inv_t);
        }
    }
}

simd_fn! {
    /// The sum in f64, in eight fixed lanes (the same result on every instruction set).
    fn lane_sum(xs: &[f32]) -> f64 {
        let mut lanes = [0f64; 8];
        let chunks = xs.chunks_exact(8);
        let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
        for c in chunks {
            for (s, &x) in lanes.iter_mut().zip(c) {
                *s += f64::from(x);
            }
        }
        lanes.iter().sum::<f64>() + tail
    }
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

    /// The plain algorithm: every probability, a full sort, then the nucleus, then the draw.
    fn full_sort_sample(rng: &mut StdRng, logits: &[f32], top_p: f64) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, exp_f32(l - max))).collect();
        let total = lane_sum(&probs.iter().map(|p| p.1).collect::<Vec<_>>());
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        probs.truncate(nucleus_len(&probs, total, top_p).unwrap_or(probs.len()));
        let mut target = rng.random::<f64>() * probs.iter().map(|p| f64::from(p.1)).sum::<f64>();
        for &(id, p) in &probs {
            target -= f64::from(p);
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
            let mut paths = [0; 2];
            for round in 0..150 {
                // Peaked and flat distributions, and one likely token above a long flat tail (the
                // tokens above the floor then hold ~80% of the mass): both paths of `kept` run.
                let logits: Vec<f32> = match round % 3 {
                    0 => (0..5000).map(|_| gen_rng.random::<f32>() * 8.0).collect(),
                    1 => (0..5000).map(|_| gen_rng.random::<f32>() * 0.5).collect(),
                    _ => (0..5000).map(|i| if i == 77 { 10.0 } else { gen_rng.random::<f32>() * 0.5 }).collect(),
                };
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let rel: Vec<f32> = logits.iter().map(|&l| exp_f32(l - max)).collect();
                let mut head: Vec<(u32, f32)> =
                    rel.iter().enumerate().map(|(i, &p)| (i as u32, p)).filter(|p| p.1 >= HEAD_FLOOR).collect();
                head.sort_by(by_prob);
                paths[usize::from(nucleus_len(&head, lane_sum(&rel), top_p).is_none())] += 1;
                let want = full_sort_sample(&mut slow, &logits, top_p);
                assert_eq!(fast.sample(&mut logits.clone(), &[]), want, "top_p {top_p} round {round}");
            }
            if top_p == 0.9 {
                assert!(paths[0] > 0 && paths[1] > 0, "head path {} times, full sort {} times", paths[0], paths[1]);
            }
        }
    }

    #[test]
    fn draws_follow_the_probabilities() {
        // Probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1; then at temperature 0.5 they are
        // squared (1, 4, 9, 16 over 30), and top-k 2 keeps the last two (9 and 16 over 25).
        let logits: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
        for (temperature, top_k, want) in [
            (1.0, None, [0.1, 0.2, 0.3, 0.4]),
            (0.5, None, [1.0 / 30.0, 4.0 / 30.0, 9.0 / 30.0, 16.0 / 30.0]),
            (0.5, Some(2), [0.0, 0.0, 9.0 / 25.0, 16.0 / 25.0]),
        ] {
            let mut s = Sampler::new(cfg(temperature, 1.0, top_k), 11);
            let draws = 40_000;
            let mut seen = [0usize; 4];
            for _ in 0..draws {
                seen[s.sample(&mut logits.clone(), &[]) as usize] += 1;
            }
            for (i, (&n, &p)) in seen.iter().zip(&want).enumerate() {
                let got = n as f64 / draws as f64;
                assert!(
                    (got - p).abs() < 0.01,
                    "temperature {temperature}, top-k {top_k:?}: token {i} drawn {got:.4}, want {p:.4}"
                );
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
