//! The request ids the registry has recorded, approximately: a Bloom filter in memory, so that
//! a request under an id never used before (what settlement sends, almost always) skips the
//! database lookup of the id's earlier use. The filter can say "maybe" for an id never used
//! (then the lookup runs and finds nothing: a little time lost), never "no" for an id used, so
//! an answer never depends on it.
//!
//! It is built on open from every id in the record, sized for four times as many, and built again
//! from the database (inside the caller's transaction, so with its own new ids) when it holds
//! that many: amortized, a constant cost per id.

use fastbloom::BloomFilter;

/// The false positive rate the filter is sized for.
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// The fewest ids a filter is sized for.
const CAPACITY_MIN: usize = 1 << 16;

/// Request ids seen, approximately. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct IdFilter {
    filter: BloomFilter,
    len: usize,
    capacity: usize,
}

impl IdFilter {
    /// A filter of these ids, with room for three times as many more.
    pub fn of<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> IdFilter {
        IdFilter::sized(ids, CAPACITY_MIN)
    }

    /// [`IdFilter::of`], sized for at least `capacity_min` ids.
    pub fn sized<'a>(ids: impl ExactSizeIterator<Item = &'a str>, capacity_min: usize) -> IdFilter {
        let capacity = (ids.len() * 4).max(capacity_min).max(1);
        let mut filter = IdFilter {
            filter: BloomFilter::with_false_pos(FALSE_POSITIVE_RATE).expected_items(capacity),
            len: 0,
            capacity,
        };
        for id in ids {
            filter.insert(id);
        }
        filter
    }

    /// Adds an id. Returns false when the filter has reached the size it was built for: build
    /// it again (the false positive rate grows past it).
    pub fn insert(&mut self, id: &str) -> bool {
        self.filter.insert(id);
        self.len += 1;
        self.len < self.capacity
    }

    /// Whether the id may have been added: false means it never was.
    pub fn may_contain(&self, id: &str) -> bool {
        self.filter.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_added_is_found_and_most_others_are_not() {
        let ids: Vec<String> = (0..10_000).map(|n| format!("T{n}:p")).collect();
        let mut filter = IdFilter::of(ids.iter().take(5_000).map(String::as_str));
        for id in &ids[5_000..] {
            assert!(filter.insert(id));
        }
        assert!(ids.iter().all(|id| filter.may_contain(id)));
        assert_eq!(filter.capacity, CAPACITY_MIN);
        let strangers = (0..10_000).filter(|n| filter.may_contain(&format!("U{n}:p"))).count();
        assert!(strangers < 300, "{strangers} false positives in 10,000");
    }

    /// How many ids it was built for.
    #[test]
    fn a_full_filter_says_so() {
        let mut filter = IdFilter::of(std::iter::empty());
        let full = (0..CAPACITY_MIN).position(|n| !filter.insert(&n.to_string()));
        assert_eq!(full, Some(CAPACITY_MIN - 1));
    }
}
