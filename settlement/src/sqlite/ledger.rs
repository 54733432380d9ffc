//! The embedded registry's current state in memory: which serials each account holds free, and
//! which pending transfer reserves which. The database holds the record (issuances and
//! transfers, each with its serial blocks); this state is derived from it on open and kept in
//! step with it by every request, so that a request reads no block rows and writes one row.

use std::collections::BTreeMap;

use cccx_engine::types::{InstrumentId, Qty};
use rustc_hash::FxHashMap;

use crate::types::{AccountId, HeldBlock, RequestId, SerialBlock, Timestamp, Transfer, Vintage};

/// Serial ranges of one instrument held by one account: (vintage, first serial) -> last serial.
/// Ranges that touch are merged, so a contiguous block the account holds lies in one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<(Vintage, u64), u64>);

/// A block that overlaps serials already there ([`Ranges::insert`]) or that is not all there
/// ([`Ranges::remove`]): the ledger's record and its state disagree.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Inconsistent(pub SerialBlock);

impl Ranges {
    /// Whether no serial is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a block, merging it with the ranges it touches.
    pub fn insert(&mut self, b: SerialBlock) -> Result<(), Inconsistent> {
        let (mut start, mut end) = (b.start, b.end);
        if let Some((&(v, s), &e)) = self.0.range(..=(b.vintage, b.start)).next_back() {
            if v == b.vintage {
                if e >= b.start {
                    return Err(Inconsistent(b));
                }
                if e + 1 == b.start {
                    start = s;
                    self.0.remove(&(v, s));
                }
            }
        }
        if let Some((&(v, s), &e)) = self.0.range((b.vintage, b.start)..).next() {
            if v == b.vintage {
                if s <= b.end {
                    return Err(Inconsistent(b));
                }
                if b.end.checked_add(1) == Some(s) {
                    end = e;
                    self.0.remove(&(v, s));
                }
            }
        }
        self.0.insert((b.vintage, start), end);
        Ok(())
    }

    /// Removes a block, which must lie within one held range.
    pub fn remove(&mut self, b: SerialBlock) -> Result<(), Inconsistent> {
        let Some((&(v, s), &e)) = self.0.range(..=(b.vintage, b.start)).next_back() else {
            return Err(Inconsistent(b));
        };
        if v != b.vintage || e < b.end {
            return Err(Inconsistent(b));
        }
        self.0.remove(&(v, s));
        if s < b.start {
            self.0.insert((v, s), b.start - 1);
        }
        if b.end < e {
            self.0.insert((v, b.end + 1), e);
        }
        Ok(())
    }

    fn of_vintage(&self, vintage: Option<Vintage>) -> impl Iterator<Item = ((Vintage, u64), u64)> + '_ {
        let range = match vintage {
            Some(v) => self.0.range((v, 0)..=(v, u64::MAX)),
            None => self.0.range(..),
        };
        range.map(|(&k, &e)| (k, e))
    }

    /// Units held, of one vintage or of all.
    pub fn units(&self, vintage: Option<Vintage>) -> Qty {
        self.of_vintage(vintage).map(|((_, s), e)| e - s + 1).sum()
    }

    /// Takes `quantity` units, oldest first (by vintage, then serial; of one vintage if given),
    /// splitting the last range when only part of it is needed. `Err` carries the units
    /// available when they are too few; then nothing is taken.
    pub fn take_oldest(
        &mut self,
        instrument: InstrumentId,
        vintage: Option<Vintage>,
        quantity: Qty,
    ) -> Result<Vec<SerialBlock>, Qty> {
        let mut need = quantity;
        let mut taken = Vec::new();
        for ((v, s), e) in self.of_vintage(vintage) {
            let take = need.min(e - s + 1);
            taken.push(SerialBlock { instrument, vintage: v, start: s, end: s + take - 1 });
            need -= take;
            if need == 0 {
                break;
            }
        }
        if need > 0 {
            return Err(self.units(vintage));
        }
        for b in &taken {
            // Each lies in one range, just read.
            let _ = self.remove(*b);
        }
        Ok(taken)
    }

    /// The ranges as blocks of `instrument`, in order.
    pub fn blocks(&self, instrument: InstrumentId) -> impl Iterator<Item = SerialBlock> + '_ {
        self.0.iter().map(move |(&(vintage, start), &end)| SerialBlock { instrument, vintage, start, end })
    }
}

/// The registry's current state: open accounts, free serials, pending reservations, serial
/// counters and the last event number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Open accounts, with when they were opened.
    pub accounts: FxHashMap<AccountId, Timestamp>,
    /// Serials held and not reserved, per account and instrument.
    pub free: FxHashMap<(AccountId, InstrumentId), Ranges>,
    /// Pending transfers; their blocks are reserved (held by `from`, not in `free`).
    pub pending: FxHashMap<RequestId, Transfer>,
    /// The next serial to issue per instrument and vintage.
    pub next_serial: FxHashMap<(InstrumentId, Vintage), u64>,
    /// The number of the last event recorded (issuance, proposal, resolution): the ledger order.
    pub seq: i64,
}

impl Ledger {
    /// The free serials of an account and instrument, created empty.
    pub fn free_mut(&mut self, account: &AccountId, instrument: InstrumentId) -> &mut Ranges {
        self.free.entry((account.clone(), instrument)).or_default()
    }

    /// Units of an account and instrument free to transfer.
    pub fn available(&self, account: &AccountId, instrument: InstrumentId, vintage: Option<Vintage>) -> Qty {
        self.free.get(&(account.clone(), instrument)).map_or(0, |r| r.units(vintage))
    }

    /// Adds blocks to an account's free serials.
    pub fn credit(&mut self, account: &AccountId, blocks: &[SerialBlock]) -> Result<(), Inconsistent> {
        for b in blocks {
            self.free_mut(account, b.instrument).insert(*b)?;
        }
        Ok(())
    }

    /// Removes blocks from an account's free serials.
    pub fn debit(&mut self, account: &AccountId, blocks: &[SerialBlock]) -> Result<(), Inconsistent> {
        for b in blocks {
            self.free_mut(account, b.instrument).remove(*b)?;
        }
        Ok(())
    }

    /// An account's blocks of an instrument now: free ones and those its pending transfers
    /// reserve (not merged).
    pub fn held(&self, account: &AccountId, instrument: InstrumentId) -> Vec<HeldBlock> {
        let mut out: Vec<HeldBlock> = self
            .free
            .get(&(account.clone(), instrument))
            .into_iter()
            .flat_map(|r| r.blocks(instrument))
            .map(|block| HeldBlock { block, reserved_by: None })
            .collect();
        for t in self.pending.values().filter(|t| t.from == *account && t.instrument == instrument) {
            out.extend(t.blocks.iter().map(|&block| HeldBlock { block, reserved_by: Some(t.id.clone()) }));
        }
        out
    }

    /// Every block held now, with its holder (not merged).
    pub fn all_held(&self) -> Vec<(AccountId, HeldBlock)> {
        let mut out: Vec<(AccountId, HeldBlock)> = Vec::new();
        for ((account, instrument), ranges) in &self.free {
            out.extend(
                ranges
                    .blocks(*instrument)
                    .map(|block| (account.clone(), HeldBlock { block, reserved_by: None })),
            );
        }
        for t in self.pending.values() {
            out.extend(
                t.blocks
                    .iter()
                    .map(|&block| (t.from.clone(), HeldBlock { block, reserved_by: Some(t.id.clone()) })),
            );
        }
        out
    }

    /// The next event number.
    pub fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: InstrumentId = InstrumentId(1);

    fn b(v: u16, start: u64, end: u64) -> SerialBlock {
        SerialBlock { instrument: I, vintage: Vintage(v), start, end }
    }

    #[test]
    fn inserting_touching_blocks_merges_them_and_overlaps_are_refused() {
        let mut r = Ranges::default();
        r.insert(b(1, 11, 20)).unwrap();
        r.insert(b(1, 1, 10)).unwrap();
        r.insert(b(1, 21, 30)).unwrap();
        r.insert(b(2, 31, 40)).unwrap();
        assert_eq!(r.blocks(I).collect::<Vec<_>>(), vec![b(1, 1, 30), b(2, 31, 40)]);
        assert_eq!(r.insert(b(1, 30, 35)), Err(Inconsistent(b(1, 30, 35))));
        assert_eq!(r.insert(b(1, 0, 1)), Err(Inconsistent(b(1, 0, 1))));
        assert_eq!(r.units(None), 40);
        assert_eq!(r.units(Some(Vintage(2))), 10);
    }

    #[test]
    fn removing_splits_a_range_and_refuses_what_is_not_held() {
        let mut r = Ranges::default();
        r.insert(b(1, 1, 30)).unwrap();
        r.remove(b(1, 11, 20)).unwrap();
        assert_eq!(r.blocks(I).collect::<Vec<_>>(), vec![b(1, 1, 10), b(1, 21, 30)]);
        assert_eq!(r.remove(b(1, 10, 21)), Err(Inconsistent(b(1, 10, 21))));
        assert_eq!(r.remove(b(2, 1, 1)), Err(Inconsistent(b(2, 1, 1))));
        r.remove(b(1, 1, 10)).unwrap();
        r.remove(b(1, 21, 30)).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn taking_takes_the_oldest_vintage_and_lowest_serials_or_nothing() {
        let mut r = Ranges::default();
        r.insert(b(2, 1, 5)).unwrap();
        r.insert(b(1, 10, 12)).unwrap();
        r.insert(b(1, 20, 29)).unwrap();
        assert_eq!(r.take_oldest(I, None, 100), Err(18));
        assert_eq!(r.take_oldest(I, Some(Vintage(2)), 6), Err(5));
        assert_eq!(r.take_oldest(I, None, 5), Ok(vec![b(1, 10, 12), b(1, 20, 21)]));
        assert_eq!(r.take_oldest(I, Some(Vintage(2)), 2), Ok(vec![b(2, 1, 2)]));
        assert_eq!(r.blocks(I).collect::<Vec<_>>(), vec![b(1, 22, 29), b(2, 3, 5)]);
    }
}
