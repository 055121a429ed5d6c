//! The rows of one keyed table (prompts, responses or judgments) while a bulk import plans
//! them: each distinct uid once, in the order of first appearance, with the id it has or
//! will get.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::Transaction;

use super::Result;
use super::uids::Keyed;

/// uids per look-up statement.
const LOOKUP_CHUNK: usize = 1000;

/// Hashes uids for the planning maps. They are SHA-256 digests in hex, uniformly spread
/// already and not chosen by an attacker: mixing their first 16 bytes (and the length, for
/// short non-hash strings) is enough, and several times cheaper than SipHash over all 64
/// bytes (an import of 100,000 pairs does 400,000 look-ups).
#[derive(Default, Clone, Copy)]
struct UidHasher(u64);

impl std::hash::Hasher for UidHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 16];
        let n = bytes.len().min(16);
        word[..n].copy_from_slice(&bytes[..n]);
        let word = u128::from_le_bytes(word);
        let mixed = (word as u64) ^ (word >> 64) as u64 ^ (bytes.len() as u64).rotate_left(32);
        self.0 = (self.0.rotate_left(5) ^ mixed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type UidMap<'a, V> = HashMap<&'a str, V, std::hash::BuildHasherDefault<UidHasher>>;

/// The order keys are inserted in: SQLite compares text keys bytewise, and the first 16
/// bytes of a hash decide all but a negligible share of comparisons. (Ties are not an error:
/// the order only makes the B-tree inserts appends.)
fn sort_prefix(uid: &str) -> u128 {
    let mut word = [0u8; 16];
    let n = uid.len().min(16);
    word[..n].copy_from_slice(&uid.as_bytes()[..n]);
    u128::from_be_bytes(word)
}

/// Rows of one keyed table, in the order of first appearance: the uid of each, and its id
/// (existing or assigned).
pub(super) struct Slots<'a> {
    pub(super) uids: Vec<&'a str>,
    pub(super) ids: Vec<i64>,
    /// Whether the row is written by this import.
    pub(super) new: Vec<bool>,
    index: UidMap<'a, usize>,
}

impl<'a> Slots<'a> {
    /// Room for `rows` distinct uids without growing (a rehash of a large map costs as much
    /// as filling it).
    pub(super) fn with_capacity(rows: usize) -> Slots<'a> {
        Slots {
            uids: Vec::with_capacity(rows),
            ids: Vec::new(),
            new: Vec::new(),
            index: UidMap::with_capacity_and_hasher(rows, Default::default()),
        }
    }

    /// The slot of `uid`, and whether this is its first appearance.
    pub(super) fn slot(&mut self, uid: &'a str) -> (usize, bool) {
        match self.index.entry(uid) {
            Entry::Occupied(e) => (*e.get(), false),
            Entry::Vacant(e) => {
                self.uids.push(uid);
                (*e.insert(self.uids.len() - 1), true)
            }
        }
    }

    /// Looks up which rows exist already; the others get ids from the table's next one.
    pub(super) fn resolve(&mut self, tx: &Transaction<'_>, kind: Keyed) -> Result<()> {
        let existing = existing(tx, kind, &self.uids)?;
        let mut next: i64 =
            tx.query_row(&format!("SELECT coalesce(max(id), 0) + 1 FROM {}", kind.table()), [], |r| r.get(0))?;
        self.ids = Vec::with_capacity(self.uids.len());
        self.new = Vec::with_capacity(self.uids.len());
        for uid in &self.uids {
            match existing.get(*uid) {
                Some(&id) => {
                    self.ids.push(id);
                    self.new.push(false);
                }
                None => {
                    self.ids.push(next);
                    self.new.push(true);
                    next += 1;
                }
            }
        }
        Ok(())
    }

    /// Ids of the rows that were there before.
    pub(super) fn existing_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.iter().zip(&self.new).filter(|(_, new)| !**new).map(|(id, _)| *id)
    }

    pub(super) fn new_count(&self) -> usize {
        self.new.iter().filter(|&&n| n).count()
    }

    /// (uid, id) of the new rows, sorted by uid.
    pub(super) fn new_keys(&self) -> Vec<(&'a str, i64)> {
        // The sort key is read once per uid: comparing through the uids' pointers would miss
        // the CPU cache on nearly every comparison (they are scattered over the heap).
        let mut keys: Vec<(u128, &str, i64)> = (0..self.uids.len())
            .filter(|&i| self.new[i])
            .map(|i| (sort_prefix(self.uids[i]), self.uids[i], self.ids[i]))
            .collect();
        keys.sort_unstable_by_key(|&(prefix, _, _)| prefix);
        keys.into_iter().map(|(_, uid, id)| (uid, id)).collect()
    }
}

/// Ids of the rows that already exist among `uids`.
fn existing(tx: &Transaction<'_>, kind: Keyed, uids: &[&str]) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    // A first import into an empty table has nothing to look up.
    let empty: bool = tx.query_row(&format!("SELECT NOT EXISTS (SELECT 1 FROM {})", kind.keys()), [], |r| r.get(0))?;
    if empty {
        return Ok(out);
    }
    // In key order the look-ups walk the index once instead of jumping around it.
    let mut sorted: Vec<(u128, &str)> = uids.iter().map(|uid| (sort_prefix(uid), *uid)).collect();
    sorted.sort_unstable_by_key(|&(prefix, _)| prefix);
    let sorted: Vec<&str> = sorted.into_iter().map(|(_, uid)| uid).collect();
    for chunk in sorted.chunks(LOOKUP_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut statement =
            tx.prepare_cached(&format!("SELECT uid, id FROM {} WHERE uid IN ({marks})", kind.keys()))?;
        let rows = statement.query_map(rusqlite::params_from_iter(chunk.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (uid, id): (String, i64) = row?;
            out.insert(uid, id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn uid_hashes_spread_over_the_bits_hashbrown_uses() {
        let uids = BuildHasherDefault::<UidHasher>::default();
        let hashes: Vec<u64> = (0..1000).map(|n| uids.hash_one(crate::domain::sha256_hex(&[&n.to_string()]))).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(tags.len(), 128, "the top 7 bits take every value");
        assert!(buckets.len() > 550, "{} of 1024 buckets", buckets.len());
        assert_ne!(uids.hash_one("ab"), uids.hash_one("ab\0"));
    }

    #[test]
    fn keys_come_out_in_the_order_sqlite_compares_them() {
        let uids: Vec<String> = (0..200).map(|n| crate::domain::sha256_hex(&[&n.to_string()])).collect();
        let mut slots = Slots::with_capacity(0);
        for uid in &uids {
            slots.slot(uid);
        }
        slots.ids = (1..=200).collect();
        slots.new = vec![true; 200];
        let keys: Vec<&str> = slots.new_keys().into_iter().map(|(uid, _)| uid).collect();
        let mut sorted: Vec<&str> = uids.iter().map(String::as_str).collect();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
