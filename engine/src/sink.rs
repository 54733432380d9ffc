//! Where the events of a command go: [`EventSink`].
//!
//! The engine and the books push every event into a sink as it happens. A `Vec<Event>` keeps
//! them (what a server, the tests and the tools use); [`Discard`] drops them, for replay, where
//! only the state the commands leave behind matters. Either way the engine's own bookkeeping
//! (trade totals, and with risk checks on the accounts and locks) follows every event: it does
//! not depend on the sink, so a replay into [`Discard`] reaches the state an apply into a
//! `Vec` does.

use crate::message::{CancelReason, Event};

/// Receives the events of a command, in the order they happen.
///
/// A sink only receives: nothing the engine decides depends on what a sink does with an event.
pub trait EventSink {
    /// Takes one event.
    fn push(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn push(&mut self, event: Event) {
        Vec::push(self, event);
    }
}

/// A sink that drops every event: what recovery replays into. Building an event that nobody
/// reads costs nothing once the compiler sees it dropped, so replay does not build them.
#[derive(Copy, Clone, Debug, Default)]
pub struct Discard;

impl EventSink for Discard {
    #[inline]
    fn push(&mut self, _event: Event) {}
}

/// Passes events on to `inner`, giving every `Cancelled` event the reason `reason`: the
/// cancels a shortfall or a suspension causes are the book's ordinary cancels, under another
/// reason.
pub(crate) struct WithCancelReason<'a, S> {
    pub(crate) inner: &'a mut S,
    pub(crate) reason: CancelReason,
}

impl<S: EventSink> EventSink for WithCancelReason<'_, S> {
    #[inline]
    fn push(&mut self, mut event: Event) {
        if let Event::Cancelled { reason, .. } = &mut event {
            *reason = self.reason;
        }
        self.inner.push(event);
    }
}
