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
use super::slab::Slab;
use crate::types::OrderId;

/// One slot: the id's 32-bit hash tag and the order's arena handle. The id itself is in the
/// arena node, so a slot is 8 bytes and a table for tens of thousands of live orders stays in
/// the core's cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Entry {
    tag: u32,
    /// Arena handle; [`NIL`] marks an empty slot.
    handle: u32,
}

const EMPTY: Entry = Entry { tag: 0, handle: NIL };

/// Slots a new index starts with (32 KiB).
const INDEX_SLOTS_INITIAL: usize = 4096;

/// Ids per block: a block of consecutive ids shares one 64-byte line of slots.
const BLOCK_IDS_LOG2: u32 = 3;

/// The 32-bit tag of an id: the Fibonacci hash of its block (`id >> 3`) in the top 29 bits, the
/// id's place in its block in the low 3. A slot's home is the block hash's top bits (which
/// line) and the place (which slot of the line): consecutive ids, as a sequencer assigns them,
/// fill a line before touching the next, while strided or scattered ids still spread evenly.
#[inline]
fn tag_of(id: OrderId) -> u32 {
    let block = (id.0 >> BLOCK_IDS_LOG2).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (block as u32 & !7) | (id.0 as u32 & 7)
}

/// Order id to arena handle, for at most a fixed number of orders.
pub struct OrderIndex {
    entries: Vec<Entry>,
    mask: usize,
    /// `32 - log2(slots)`: a tag's top bits shifted right by this are its home line.
    shift: u32,
    len: usize,
    max: usize,
}

impl OrderIndex {
    /// An index for up to `max` orders.
    pub fn with_max(max: usize) -> Self {
        let mut index = OrderIndex { entries: Vec::new(), mask: 0, shift: 0, len: 0, max };
        index.resize(Self::slots_for(max).min(INDEX_SLOTS_INITIAL));
        index
    }

    /// Slots that hold `n` ids at a load of at most 1/2.
    fn slots_for(n: usize) -> usize {
        (2 * n + 1).next_power_of_two().max(16)
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; slots]);
        self.mask = slots - 1;
        self.shift = 32 - slots.trailing_zeros();
        for e in old.into_iter().filter(|e| e.handle != NIL) {
            let i = self.free_slot(e.tag);
            self.entries[i] = e;
        }
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        let line = u64::from(tag) >> self.shift >> BLOCK_IDS_LOG2;
        ((line << BLOCK_IDS_LOG2) as usize | (tag & 7) as usize) & self.mask
    }

    #[inline]
    fn free_slot(&self, tag: u32) -> usize {
        let mut i = self.home(tag);
        while self.entries[i].handle != NIL {
            i = (i + 1) & self.mask;
        }
        i
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

    /// The handle of `id`, if present; `orders` holds the ids the tags stand for.
    #[inline]
    pub fn get(&self, id: OrderId, orders: &Slab) -> Option<u32> {
        let tag = tag_of(id);
        let mut i = self.home(tag);
        loop {
            let e = self.entries[i];
            if e.handle == NIL {
                return None;
            }
            if e.tag == tag && orders[e.handle].id == id {
                return Some(e.handle);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `id` at `handle`; the id must be absent and the index not full.
    #[inline]
    pub fn insert(&mut self, id: OrderId, handle: u32) {
        debug_assert!(handle != NIL && !self.is_full());
        if (self.len + 1) * 2 > self.entries.len() {
            // Warm-up only: at most log2(max / initial) times in a book's life.
            self.resize(self.entries.len() * 2);
        }
        let tag = tag_of(id);
        let i = self.free_slot(tag);
        self.entries[i] = Entry { tag, handle };
        self.len += 1;
    }

    /// Removes `id`, which is present at `handle`.
    #[inline]
    pub fn remove(&mut self, id: OrderId, handle: u32) {
        let mut i = self.home(tag_of(id));
        while self.entries[i].handle != handle {
            debug_assert!(self.entries[i].handle != NIL, "removing an absent id");
            i = (i + 1) & self.mask;
        }
        // Backward shift: pull each later entry of the cluster into the hole unless that would
        // put it before its home slot.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let e = self.entries[j];
            if e.handle == NIL {
                break;
            }
            let home = self.home(e.tag);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(i) & self.mask) {
                self.entries[i] = e;
                i = j;
            }
        }
        self.entries[i] = EMPTY;
        self.len -= 1;
    }

    /// Checks that every entry carries its order's tag, is reachable from its home slot, and
    /// that the count is right.
    pub fn check_invariants(&self, orders: &Slab) -> Result<(), String> {
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if e.handle == NIL {
                continue;
            }
            n += 1;
            let id = orders[e.handle].id;
            if tag_of(id) != e.tag || self.get(id, orders) != Some(e.handle) {
                return Err(format!("id {id} in slot {i} is not reachable"));
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
    use crate::book::slab::OrderNode;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// An index with the arena that holds its ids.
    struct Indexed {
        index: OrderIndex,
        orders: Slab,
    }

    impl Indexed {
        fn new(max: usize) -> Self {
            Indexed { index: OrderIndex::with_max(max), orders: Slab::with_capacity(max) }
        }
        fn insert(&mut self, id: u64) -> u32 {
            let handle = self.orders.insert(OrderNode { id: OrderId(id), ..OrderNode::VACANT });
            self.index.insert(OrderId(id), handle);
            handle
        }
        fn get(&self, id: u64) -> Option<u32> {
            self.index.get(OrderId(id), &self.orders)
        }
        fn remove(&mut self, id: u64) -> Option<u32> {
            let handle = self.get(id)?;
            self.index.remove(OrderId(id), handle);
            self.orders.remove(handle);
            Some(handle)
        }
        fn check(&self) -> Result<(), String> {
            self.index.check_invariants(&self.orders)
        }
    }

    proptest! {
        /// The index agrees with a `HashMap` under any mix of inserts and removes, including
        /// ids that collide in the table (tiny tables, strided ids).
        #[test]
        fn index_matches_a_hash_map(
            max in 1usize..200,
            ops in prop::collection::vec((any::<bool>(), 0u64..64, 0u32..5), 1..600),
        ) {
            let mut index = Indexed::new(max);
            let mut model: HashMap<u64, u32> = HashMap::new();
            for (insert, k, stride) in ops {
                let id = k << (stride * 15);
                if insert {
                    if !model.contains_key(&id) && model.len() < max {
                        let handle = index.insert(id);
                        model.insert(id, handle);
                    }
                } else {
                    prop_assert_eq!(index.remove(id), model.remove(&id));
                }
                prop_assert_eq!(index.index.len(), model.len());
                prop_assert_eq!(index.index.is_full(), model.len() >= max);
                index.check().map_err(TestCaseError::fail)?;
                for (id, h) in &model {
                    prop_assert_eq!(index.get(*id), Some(*h));
                }
                prop_assert_eq!(index.get(id), model.get(&id).copied());
            }
        }
    }

    #[test]
    fn grows_from_small_to_its_maximum() {
        let id = |k: u64| k * 7919 + (k << 40);
        let mut index = Indexed::new(100_000);
        assert_eq!(index.index.entries.len(), INDEX_SLOTS_INITIAL);
        let handles: Vec<u32> = (0..100_000).map(|k| index.insert(id(k))).collect();
        assert!(index.index.is_full());
        assert_eq!(index.index.entries.len(), OrderIndex::slots_for(100_000));
        index.check().unwrap();
        for k in (0..100_000u64).step_by(2) {
            assert_eq!(index.remove(id(k)), Some(handles[k as usize]));
        }
        index.check().unwrap();
        for k in 0..100_000u64 {
            assert_eq!(index.get(id(k)), (k % 2 == 1).then_some(handles[k as usize]));
        }
    }

    #[test]
    fn churn_does_not_fill_the_table() {
        // Far more inserts and removes than slots: without tombstones the table stays usable.
        let mut index = Indexed::new(1000);
        for id in 0..1_000_000u64 {
            index.insert(id);
            if id >= 999 {
                assert!(index.remove(id - 999).is_some());
            }
        }
        assert_eq!(index.index.len(), 999);
        index.check().unwrap();
    }
}
