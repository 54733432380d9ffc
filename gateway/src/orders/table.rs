//! Containers for what the engine thread keeps of every order of the day, chosen so that no
//! insert ever costs more than a small, fixed amount of work.
//!
//! A hash map that grows rehashes everything it holds at once: with a day's orders in it
//! (tens of thousands and more) that is milliseconds during which the engine thread applies
//! nothing, and every order in flight waits (`cargo bench --bench fix_load` showed the stalls
//! at 3,500, 7,000, 14,000 and 28,000 orders, up to 18 ms). These grow a chunk at a time.

use std::collections::HashMap;

/// Ids per chunk of an [`OrderTable`]: a chunk of order views is 48 KiB (192 bytes each).
const CHUNK: u64 = 256;
/// Items per chunk of a [`ChunkedList`].
const LIST_CHUNK: usize = 4096;

/// Values keyed by order id, stored in chunks of [`CHUNK`] consecutive ids. The gateway hands
/// out order ids in sequence, so a chunk fills up before the next is allocated; the map of
/// chunks holds one entry per 256 orders, and its own growth moves no order (a million orders
/// make 4,096 entries). Sparse ids (a hand-made journal) still work, at the cost of one chunk
/// each.
pub(super) struct OrderTable<T> {
    chunks: HashMap<u64, Box<[Option<T>]>>,
}

impl<T> Default for OrderTable<T> {
    fn default() -> Self {
        OrderTable { chunks: HashMap::new() }
    }
}

impl<T> OrderTable<T> {
    /// The value of an id, if any.
    pub(super) fn get(&self, id: u64) -> Option<&T> {
        self.chunks.get(&(id / CHUNK))?[(id % CHUNK) as usize].as_ref()
    }

    /// The value of an id, if any, to change.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.chunks.get_mut(&(id / CHUNK))?[(id % CHUNK) as usize].as_mut()
    }

    /// Whether an id has a value.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Sets an id's value; returns the one it replaces.
    pub(super) fn insert(&mut self, id: u64, value: T) -> Option<T> {
        let chunk = self.chunks.entry(id / CHUNK).or_insert_with(|| (0..CHUNK).map(|_| None).collect());
        chunk[(id % CHUNK) as usize].replace(value)
    }

    /// Keeps the values `keep` accepts and drops the others; a chunk left empty is freed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64, &T) -> bool) {
        self.chunks.retain(|number, chunk| {
            for (i, slot) in chunk.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|v| !keep(number * CHUNK + i as u64, v)) {
                    *slot = None;
                }
            }
            chunk.iter().any(Option::is_some)
        });
    }

    /// Chunks allocated (each holds [`CHUNK`] ids).
    #[cfg(test)]
    fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

/// An append-only list kept in chunks of [`LIST_CHUNK`] items: a push never copies what the
/// list already holds.
pub(super) struct ChunkedList<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for ChunkedList<T> {
    fn default() -> Self {
        ChunkedList { chunks: Vec::new() }
    }
}

impl<T> ChunkedList<T> {
    /// Appends an item.
    pub(super) fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < LIST_CHUNK => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(LIST_CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
    }

    /// The items, newest first.
    pub(super) fn iter_rev(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().rev().flat_map(|c| c.iter().rev())
    }

    /// Keeps the items `keep` accepts, in their order (rebuilds the list: for a rare clean-up,
    /// not for the engine thread's every command).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let old = std::mem::take(&mut self.chunks);
        for item in old.into_iter().flatten() {
            if keep(&item) {
                self.push(item);
            }
        }
    }

    /// Whether the list holds nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The table answers as a `HashMap` does, for ids clustered in a few chunks and spread
        /// over the whole range alike.
        #[test]
        fn the_table_behaves_like_a_hash_map(
            ops in proptest::collection::vec(
                (0u8..3, prop_oneof![0u64..3 * CHUNK, any::<u64>()], any::<u32>()),
                0..400,
            )
        ) {
            let mut table = OrderTable::default();
            let mut model = HashMap::new();
            for (op, id, value) in ops {
                match op {
                    0 => prop_assert_eq!(table.insert(id, value), model.insert(id, value)),
                    1 => {
                        if let (Some(t), Some(m)) = (table.get_mut(id), model.get_mut(&id)) {
                            *t = t.wrapping_add(1);
                            *m = m.wrapping_add(1);
                        }
                    }
                    _ => {
                        // Drop every value divisible by the op's value (most of them when it is 1).
                        let divisor = value % 4 + 1;
                        table.retain(|_, v| v % divisor != 0);
                        model.retain(|_, v| *v % divisor != 0);
                    }
                }
                prop_assert_eq!(table.get(id), model.get(&id));
                prop_assert_eq!(table.contains(id), model.contains_key(&id));
            }
            for (id, value) in &model {
                prop_assert_eq!(table.get(*id), Some(value));
            }
            // No chunk is kept for nothing.
            table.retain(|_, _| false);
            prop_assert_eq!(table.chunk_count(), 0);
        }

        /// The list gives back what was pushed, newest first, across chunk boundaries.
        #[test]
        fn the_list_gives_back_its_items_newest_first(n in 0usize..3 * LIST_CHUNK + 5) {
            let mut list = ChunkedList::default();
            for i in 0..n {
                list.push(i);
            }
            let back: Vec<usize> = list.iter_rev().copied().collect();
            prop_assert_eq!(back, (0..n).rev().collect::<Vec<_>>());
        }

        /// Retaining keeps the order of what stays, and the list still grows afterwards.
        #[test]
        fn the_list_retains_in_order(n in 0usize..3 * LIST_CHUNK + 5, divisor in 1usize..5) {
            let mut list = ChunkedList::default();
            for i in 0..n {
                list.push(i);
            }
            list.retain(|i| i % divisor != 0);
            list.push(n);
            let back: Vec<usize> = list.iter_rev().copied().collect();
            let expected: Vec<usize> =
                (0..n).filter(|i| i % divisor != 0).chain(std::iter::once(n)).rev().collect();
            prop_assert_eq!(back, expected);
            list.retain(|_| false);
            prop_assert!(list.is_empty());
        }
    }
}
