//! Segments kept to serve others: least recently used first out, bounded by count and by bytes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;

use crate::node::Source;

#[derive(Debug)]
pub(super) struct Stored {
    pub bytes: Bytes,
    pub digest: [u8; 32],
    pub source: Source,
    /// How long the transfer that brought it in took.
    pub took: Duration,
    used: u64,
}

#[derive(Debug)]
pub(super) struct Store {
    max_count: usize,
    max_bytes: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<String, Stored>,
    /// Use order: oldest first.
    order: BTreeMap<u64, String>,
}

impl Store {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Self {
            max_count,
            max_bytes,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Looks without marking it used (serving peers does not keep a segment).
    pub fn get(&self, id: &str) -> Option<&Stored> {
        self.entries.get(id)
    }

    /// Marks `id` used now (the player asked for it again).
    pub fn touch(&mut self, id: &str) {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(id) {
            self.order.remove(&entry.used);
            entry.used = self.clock;
            self.order.insert(self.clock, id.to_owned());
        }
    }

    pub fn put(
        &mut self,
        id: &str,
        bytes: Bytes,
        digest: [u8; 32],
        source: Source,
        took: Duration,
    ) {
        self.remove(id);
        self.clock += 1;
        self.bytes += bytes.len() as u64;
        self.order.insert(self.clock, id.to_owned());
        self.entries.insert(
            id.to_owned(),
            Stored {
                bytes,
                digest,
                source,
                took,
                used: self.clock,
            },
        );
        while self.entries.len() > self.max_count || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.bytes.len() as u64;
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(gone) = self.entries.remove(id) {
            self.order.remove(&gone.used);
            self.bytes -= gone.bytes.len() as u64;
        }
    }

    /// Stored segments, most recently used first.
    pub fn newest(&self) -> impl Iterator<Item = (&str, &Stored)> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.entries.get(id).map(|s| (id.as_str(), s)))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_bytes_least_recently_used_out() {
        let mut s = Store::new(3, 100);
        for id in ["a", "b", "c"] {
            s.put(
                id,
                Bytes::from(vec![0; 10]),
                [0; 32],
                Source::Http,
                Duration::ZERO,
            );
        }
        s.touch("a");
        s.put(
            "d",
            Bytes::from(vec![0; 10]),
            [0; 32],
            Source::P2p,
            Duration::ZERO,
        );
        assert!(!s.contains("b"), "b was the least recently used");
        let order: Vec<&str> = s.newest().map(|(id, _)| id).collect();
        assert_eq!(order, ["d", "a", "c"]);
        s.put(
            "big",
            Bytes::from(vec![0; 95]),
            [0; 32],
            Source::Http,
            Duration::ZERO,
        );
        assert_eq!(s.len(), 1, "bytes bound: only the newest fits");
        assert_eq!(s.bytes(), 95);
        s.put(
            "big",
            Bytes::from(vec![0; 5]),
            [0; 32],
            Source::Http,
            Duration::ZERO,
        );
        assert_eq!(s.bytes(), 5, "a replaced entry is not counted twice");
    }
}
