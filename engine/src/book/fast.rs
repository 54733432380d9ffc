//! Placeholder while the fast book is written.
use super::{OrderBook, RestingOrder};
use crate::message::{Event, NewOrder};
use crate::types::*;

/// The fast book.
pub struct Book;

impl OrderBook for Book {
    fn new(_: InstrumentId, _: &InstrumentSpec) -> Self {
        Book
    }
    fn submit(&mut self, _: &NewOrder, _: u64, _: &mut Vec<Event>) {
        todo!()
    }
    fn cancel(&mut self, _: OrderId, _: ParticipantId, _: &mut Vec<Event>) {
        todo!()
    }
    fn amend(&mut self, _: OrderId, _: ParticipantId, _: Price, _: Qty, _: u64, _: &mut Vec<Event>) {
        todo!()
    }
    fn mass_cancel(&mut self, _: Option<ParticipantId>, _: &mut Vec<Event>) {
        todo!()
    }
    fn expire_day(&mut self, _: &mut Vec<Event>) {
        todo!()
    }
    fn best_price(&self, _: Side) -> Option<Price> {
        todo!()
    }
    fn for_each_order(&self, _: Side, _: &mut dyn FnMut(&RestingOrder)) {
        todo!()
    }
    fn order(&self, _: OrderId) -> Option<RestingOrder> {
        todo!()
    }
    fn order_count(&self) -> usize {
        todo!()
    }
    fn check_invariants(&self) -> Result<(), String> {
        todo!()
    }
}
