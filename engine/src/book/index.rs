//! The order-id index: order id to arena handle.
//!
//! An open-addressing table with linear probing and backward-shift deletion, kept at a load of
//! at most 1/2. It starts small (so that a book with few live orders stays in cache) and
//! doubles as the book fills, up to the size that `resting_orders_max` needs; once a book has
//! seen its high-water mark it never allocates again. Deletion moves the following entries
//! back instead of leaving tombstones, so the table does not degrade however long orders come
//! and go: a probe never walks further than the cluster it lands in. Slots are chosen by
//! Fibonacci hashing, which spreads sequential and strided ids evenly.

use super::ladder::NIL;
use crate::types::OrderId;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: u64,
    /// Arena handle; [`NIL`] marks an empty slot.
    handle: u32,
}

const EMPTY: Entry = Entry { id: 0, handle: NIL };

/// Slots a new index starts with (64 KiB).
const INDEX_SLOTS_INITIAL: usize = 4096;

/// Order id to arena handle, for at most a fixed number of orders.
pub struct OrderIndex {
    entries: Vec<Entry>,
    mask: usize,
    /// `64 - log2(slots)`.
    shift: u32,
    len: usize,
    max: usize,
}

impl OrderIndex {
    /// An index for up to `max` orders.
    pub fn with_max(max: usize) -> Self {
        let slots = Self::slots_for(max).min(INDEX_SLOTS_INITIAL);
        OrderIndex {
            entries: vec![EMPTY; slots],
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            len: 0,
            max,
        }
    }

    /// Slots that hold `n` ids at a load of at most 1/2.
    fn slots_for(n: usize) -> usize {
        (2 * n + 1).next_power_of_two().max(16)
    }

    /// Doubles the table (warm-up only: at most log2(max / initial) times in a book's life).
    #[cold]
    fn grow(&mut self) {
        let slots = self.entries.len() * 2;
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; slots]);
        self.mask = slots - 1;
        self.shift = 64 - slots.trailing_zeros();
        for e in old.into_iter().filter(|e| e.handle != NIL) {
            let mut i = self.home(e.id);
            while self.entries[i].handle != NIL {
                i = (i + 1) & self.mask;
            }
            self.entries[i] = e;
        }
    }

    /// Fibonacci hashing: the top bits of `id * 2^64 / phi`. Consecutive ids land far apart
    /// and evenly spread, so linear probing finds short clusters.
    #[inline]
    fn home(&self, id: u64) -> usize {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Number of ids held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds its maximum number of ids.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len >= self.max
    }

    /// The handle of `id`, if present.
    #[inline]
    pub fn get(&self, id: OrderId) -> Option<u32> {
        let mut i = self.home(id.0);
        loop {
            let e = self.entries[i];
            if e.handle == NIL {
                return None;
            }
            if e.id == id.0 {
                return Some(e.handle);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `id`, which must be absent, while the index is not full.
    #[inline]
    pub fn insert(&mut self, id: OrderId, handle: u32) {
        debug_assert!(handle != NIL && !self.is_full() && self.get(id).is_none());
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        let mut i = self.home(id.0);
        while self.entries[i].handle != NIL {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = Entry { id: id.0, handle };
        self.len += 1;
    }

    /// Removes `id`, returning its handle if it was present.
    #[inline]
    pub fn remove(&mut self, id: OrderId) -> Option<u32> {
        let mut i = self.home(id.0);
        loop {
            let e = self.entries[i];
            if e.handle == NIL {
                return None;
            }
            if e.id == id.0 {
                break;
            }
            i = (i + 1) & self.mask;
        }
        let handle = self.entries[i].handle;
        // Backward shift: pull each later entry of the cluster into the hole unless that would
        // put it before its home slot.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let e = self.entries[j];
            if e.handle == NIL {
                break;
            }
            let home = self.home(e.id);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(i) & self.mask) {
                self.entries[i] = e;
                i = j;
            }
        }
        self.entries[i] = EMPTY;
        self.len -= 1;
        Some(handle)
    }

    /// Checks that every entry is reachable from its home slot and the count is right.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if e.handle == NIL {
                continue;
            }
            n += 1;
            if self.get(OrderId(e.id)) != Some(e.handle) {
                return Err(format!("id {} in slot {i} is not reachable", e.id));
            }
        }
        if n != self.len {
            return Err(format!("index counts {} ids but holds {n}", self.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The index agrees with a `HashMap` under any mix of inserts and removes, including
        /// ids that collide in the table (tiny tables, strided ids).
        #[test]
        fn index_matches_a_hash_map(
            max in 1usize..200,
            ops in prop::collection::vec((any::<bool>(), 0u64..64, 0u32..5), 1..600),
        ) {
            let mut index = OrderIndex::with_max(max);
            let mut model: HashMap<u64, u32> = HashMap::new();
            for (insert, k, stride) in ops {
                let id = k << (stride * 15);
                if insert {
                    if !model.contains_key(&id) && model.len() < max {
                        index.insert(OrderId(id), k as u32);
                        model.insert(id, k as u32);
                    }
                } else {
                    prop_assert_eq!(index.remove(OrderId(id)), model.remove(&id));
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.is_full(), model.len() >= max);
                index.check_invariants().map_err(TestCaseError::fail)?;
                for (id, h) in &model {
                    prop_assert_eq!(index.get(OrderId(*id)), Some(*h));
                }
                prop_assert_eq!(index.get(OrderId(id)), model.get(&id).copied());
            }
        }
    }

    #[test]
    fn grows_from_small_to_its_maximum() {
        let mut index = OrderIndex::with_max(100_000);
        assert_eq!(index.entries.len(), INDEX_SLOTS_INITIAL);
        for k in 0..100_000u64 {
            index.insert(OrderId(k * 7919 + (k << 40)), k as u32);
        }
        assert!(index.is_full());
        assert_eq!(index.entries.len(), OrderIndex::slots_for(100_000));
        index.check_invariants().unwrap();
        for k in (0..100_000u64).step_by(2) {
            assert_eq!(index.remove(OrderId(k * 7919 + (k << 40))), Some(k as u32));
        }
        index.check_invariants().unwrap();
        for k in 0..100_000u64 {
            let want = (k % 2 == 1).then_some(k as u32);
            assert_eq!(index.get(OrderId(k * 7919 + (k << 40))), want);
        }
    }

    #[test]
    fn churn_does_not_fill_the_table() {
        // Far more inserts and removes than slots: without tombstones every probe stays short.
        let mut index = OrderIndex::with_max(1000);
        for id in 0..1_000_000u64 {
            index.insert(OrderId(id), (id % 1000) as u32);
            if id >= 999 {
                assert!(index.remove(OrderId(id - 999)).is_some());
            }
        }
        assert_eq!(index.len(), 999);
        index.check_invariants().unwrap();
    }
}
