//! One side's price levels, indexed by a "key" where a smaller key is a better price.
//!
//! The book maps prices to keys (`price / tick` for asks, `-(price / tick)` for bids), so both
//! sides share one structure in which the best level is the smallest key.
//!
//! Regulated certificate markets trade inside a narrow band, so the ladder keeps a dense window
//! of levels, one slot per tick, with a two-level bitmap of the non-empty slots: finding a level
//! is an array index, finding the next non-empty level a couple of `trailing_zeros`. Keys outside
//! the window (a wide or drifting market) live in a `BTreeMap`: correct at any width, only slower.
//! When the instrument has a price band that fits, the window covers the band and never moves;
//! otherwise it is centred on the first price that arrives in an empty side, and again each time
//! the side empties.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::types::Qty;

/// Marks the end of an intrusive list.
pub const NIL: u32 = u32::MAX;

/// One price level: an intrusive FIFO of orders (slab indices) and its totals.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Level {
    /// Oldest order (first to trade), or [`NIL`].
    pub head: u32,
    /// Newest order, or [`NIL`].
    pub tail: u32,
    /// Number of orders.
    pub count: u32,
    /// Sum of the orders' open quantities.
    pub qty: Qty,
}

impl Level {
    const EMPTY: Level = Level { head: NIL, tail: NIL, count: 0, qty: 0 };
}

/// The levels of one side of a book.
pub struct Ladder {
    /// Key of dense slot 0.
    base: i64,
    /// Whether `base` is fixed (the window covers the price band).
    fixed: bool,
    levels: Vec<Level>,
    /// Bit `i` set when `levels[i]` is non-empty.
    bits: Vec<u64>,
    /// Bit `w` set when `bits[w] != 0`.
    summary: Vec<u64>,
    overflow: BTreeMap<i64, Level>,
    best: Option<i64>,
    level_count: usize,
}

impl Ladder {
    /// A ladder with a dense window of `window` slots (rounded up to a multiple of 64). With
    /// `fixed_base`, the window starts there and never moves.
    pub fn new(window: u32, fixed_base: Option<i64>) -> Self {
        let words = (window as usize).div_ceil(64).max(1);
        Ladder {
            base: fixed_base.unwrap_or(0),
            fixed: fixed_base.is_some(),
            levels: vec![Level::EMPTY; words * 64],
            bits: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
            overflow: BTreeMap::new(),
            best: None,
            level_count: 0,
        }
    }

    /// The best (smallest) key with a level, if any.
    #[inline]
    pub fn best(&self) -> Option<i64> {
        self.best
    }

    /// Number of non-empty levels.
    pub fn level_count(&self) -> usize {
        self.level_count
    }

    #[inline]
    fn slot(&self, key: i64) -> Option<usize> {
        let off = key.wrapping_sub(self.base);
        if off >= 0 && (off as u64) < self.levels.len() as u64 {
            Some(off as usize)
        } else {
            None
        }
    }

    /// The level at `key`, if it exists.
    #[inline]
    pub fn get(&self, key: i64) -> Option<&Level> {
        match self.slot(key) {
            Some(s) if self.levels[s].count > 0 => Some(&self.levels[s]),
            Some(_) => None,
            None => self.overflow.get(&key),
        }
    }

    /// The level at `key` for update, if it exists.
    #[inline]
    pub fn get_mut(&mut self, key: i64) -> Option<&mut Level> {
        match self.slot(key) {
            Some(s) if self.levels[s].count > 0 => Some(&mut self.levels[s]),
            Some(_) => None,
            None => self.overflow.get_mut(&key),
        }
    }

    /// The level at `key`, created empty (and counted as present) when missing. The caller
    /// must give a new level an order before the next call that looks at the ladder.
    #[inline]
    pub fn get_or_insert(&mut self, key: i64) -> &mut Level {
        if self.best.is_none() && !self.fixed {
            // Empty side: centre the window on the first price.
            self.base = key.saturating_sub((self.levels.len() / 2) as i64);
        }
        if self.best.is_none_or(|b| key < b) {
            self.best = Some(key);
        }
        match self.slot(key) {
            Some(s) => {
                if self.levels[s].count == 0 {
                    self.set_bit(s);
                    self.level_count += 1;
                }
                &mut self.levels[s]
            }
            None => {
                if !self.overflow.contains_key(&key) {
                    self.level_count += 1;
                }
                self.overflow.entry(key).or_insert(Level::EMPTY)
            }
        }
    }

    /// Removes the (now empty) level at `key`.
    #[inline]
    pub fn remove(&mut self, key: i64) {
        match self.slot(key) {
            Some(s) => {
                debug_assert!(self.bits[s / 64] & (1 << (s % 64)) != 0);
                self.levels[s] = Level::EMPTY;
                self.clear_bit(s);
            }
            None => {
                self.overflow.remove(&key);
            }
        }
        self.level_count -= 1;
        if self.best == Some(key) {
            self.best = self.next_after(key);
        }
    }

    /// The smallest key with a level that is greater than `key`.
    pub fn next_after(&self, key: i64) -> Option<i64> {
        let dense = if key < self.base {
            self.next_set(0)
        } else {
            match self.slot(key) {
                Some(s) => self.next_set(s + 1),
                None => None,
            }
        }
        .map(|s| self.base + s as i64);
        if self.overflow.is_empty() {
            return dense;
        }
        let over = self.overflow.range((Bound::Excluded(key), Bound::Unbounded)).next().map(|(k, _)| *k);
        match (dense, over) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Calls `f` with every level's key, best first.
    pub fn for_each_key(&self, mut f: impl FnMut(i64)) {
        let mut key = self.best;
        while let Some(k) = key {
            f(k);
            key = self.next_after(k);
        }
    }

    #[inline]
    fn set_bit(&mut self, s: usize) {
        let w = s / 64;
        self.bits[w] |= 1 << (s % 64);
        self.summary[w / 64] |= 1 << (w % 64);
    }

    #[inline]
    fn clear_bit(&mut self, s: usize) {
        let w = s / 64;
        self.bits[w] &= !(1 << (s % 64));
        if self.bits[w] == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
        }
    }

    /// The first dense slot at or after `s` that holds a level.
    #[inline]
    fn next_set(&self, s: usize) -> Option<usize> {
        let w = s / 64;
        if w >= self.bits.len() {
            return None;
        }
        let here = self.bits[w] & (!0u64 << (s % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        let w = w + 1;
        let mut sw = w / 64;
        if sw >= self.summary.len() {
            return None;
        }
        let mut word = self.summary[sw] & (!0u64 << (w % 64));
        loop {
            if word != 0 {
                let bw = sw * 64 + word.trailing_zeros() as usize;
                return Some(bw * 64 + self.bits[bw].trailing_zeros() as usize);
            }
            sw += 1;
            if sw >= self.summary.len() {
                return None;
            }
            word = self.summary[sw];
        }
    }

    /// Checks the ladder's own invariants: bitmaps agree with the levels, overflow keys lie
    /// outside the window, the cached best and count are right.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut count = 0;
        for (s, level) in self.levels.iter().enumerate() {
            let bit = self.bits[s / 64] & (1 << (s % 64)) != 0;
            if bit != (level.count > 0) {
                return Err(format!("slot {s}: bitmap {bit} but level count {}", level.count));
            }
            if level.count == 0 && *level != Level::EMPTY {
                return Err(format!("slot {s}: empty level not reset"));
            }
            count += usize::from(bit);
        }
        for (w, bits) in self.bits.iter().enumerate() {
            let sbit = self.summary[w / 64] & (1 << (w % 64)) != 0;
            if sbit != (*bits != 0) {
                return Err(format!("summary bit of word {w} is {sbit}"));
            }
        }
        for (key, level) in &self.overflow {
            if self.slot(*key).is_some() {
                return Err(format!("overflow key {key} lies inside the dense window"));
            }
            if level.count == 0 {
                return Err(format!("overflow level {key} is empty"));
            }
        }
        count += self.overflow.len();
        if count != self.level_count {
            return Err(format!("level count {} but {count} levels", self.level_count));
        }
        let dense_best = self.next_set(0).map(|s| self.base + s as i64);
        let over_best = self.overflow.keys().next().copied();
        let best = match (dense_best, over_best) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if best != self.best {
            return Err(format!("cached best {:?} but best is {best:?}", self.best));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The ladder agrees with a `BTreeSet` of keys on best, next and order, whatever the
        /// window and wherever the keys fall.
        #[test]
        fn ladder_matches_a_sorted_set(
            window in prop_oneof![Just(1u32), Just(64), Just(200), Just(5000)],
            fixed in prop_oneof![Just(None), Just(Some(-100i64))],
            ops in prop::collection::vec((any::<bool>(), -3000i64..3000), 1..300),
        ) {
            let mut ladder = Ladder::new(window, fixed);
            let mut model = BTreeSet::new();
            for (insert, key) in ops {
                if insert {
                    let level = ladder.get_or_insert(key);
                    level.count += 1;
                    level.qty += 1;
                    if level.count == 1 {
                        level.head = 0;
                        level.tail = 0;
                    }
                    model.insert(key);
                } else if model.remove(&key) {
                    let level = ladder.get_mut(key).unwrap();
                    *level = Level::EMPTY;
                    ladder.remove(key);
                }
                ladder.check_invariants().map_err(TestCaseError::fail)?;
                prop_assert_eq!(ladder.best(), model.first().copied());
                prop_assert_eq!(ladder.level_count(), model.len());
                let mut keys = Vec::new();
                ladder.for_each_key(|k| keys.push(k));
                prop_assert_eq!(keys, model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(ladder.next_after(key), model.range(key + 1..).next().copied());
            }
        }
    }
}
