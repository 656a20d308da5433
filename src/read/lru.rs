//! A small least-recently-used map bounded by total weight.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Least-recently-used entries leave first once the total weight passes the capacity.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    capacity: u64,
    weight: u64,
    tick: u64,
    entries: HashMap<K, (V, u64, u64)>,
    by_use: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: u64) -> Self {
        Lru {
            capacity,
            weight: 0,
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, _, used) = self.entries.get_mut(key)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, key.clone());
        Some(value.clone())
    }

    pub(crate) fn insert(&mut self, key: K, value: V, weight: u64) {
        if weight > self.capacity {
            return;
        }
        self.remove(&key);
        self.tick += 1;
        self.by_use.insert(self.tick, key.clone());
        self.entries.insert(key, (value, weight, self.tick));
        self.weight += weight;
        while self.weight > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((_, w, _)) = self.entries.remove(&oldest) {
                self.weight -= w;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some((_, w, used)) = self.entries.remove(key) {
            self.by_use.remove(&used);
            self.weight -= w;
        }
    }

    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_entries_leave_first() {
        let mut l = Lru::new(30);
        l.insert(1, "a", 10);
        l.insert(2, "b", 10);
        l.insert(3, "c", 10);
        assert_eq!(l.get(&1), Some("a"));
        l.insert(4, "d", 10);
        assert_eq!(l.get(&2), None, "2 was least recently used");
        assert_eq!(l.get(&1), Some("a"));
        assert_eq!(l.weight(), 30);
    }

    #[test]
    fn an_entry_heavier_than_the_cache_is_not_kept() {
        let mut l = Lru::new(5);
        l.insert(1, "a", 10);
        assert_eq!(l.get(&1), None);
        assert_eq!(l.weight(), 0);
    }
}
