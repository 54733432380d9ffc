//! The arena that holds a book's resting orders: stable `u32` handles, O(1) insert and remove,
//! no allocation once it has grown to the book's high-water mark.

use super::ladder::NIL;
use crate::types::{OrderId, ParticipantId, Price, Qty, Side, TimeInForce};

/// A resting order, linked into its price level's FIFO. One cache line.
#[derive(Copy, Clone, Debug)]
#[repr(align(64))]
pub struct OrderNode {
    pub id: OrderId,
    pub leaves: Qty,
    pub filled: Qty,
    pub price: Price,
    /// Time priority: strictly increasing along a level's list.
    pub priority: u64,
    pub prev: u32,
    pub next: u32,
    pub participant: ParticipantId,
    pub side: Side,
    pub tif: TimeInForce,
    pub post_only: bool,
}

impl OrderNode {
    pub(super) const VACANT: OrderNode = OrderNode {
        id: OrderId(0),
        leaves: 0,
        filled: 0,
        price: 0,
        priority: 0,
        prev: NIL,
        next: NIL,
        participant: ParticipantId(0),
        side: Side::Buy,
        tif: TimeInForce::Gtc,
        post_only: false,
    };
}

/// A free-list arena of [`OrderNode`]s.
pub struct Slab {
    nodes: Vec<OrderNode>,
    free: Vec<u32>,
}

impl Slab {
    /// An empty arena with room for `capacity` orders. The memory is written now, so that no
    /// page fault lands in the middle of matching later.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut nodes = Vec::with_capacity(capacity);
        for slot in nodes.spare_capacity_mut() {
            slot.write(OrderNode::VACANT);
        }
        let mut free: Vec<u32> = Vec::with_capacity(capacity);
        free.spare_capacity_mut().iter_mut().for_each(|slot| {
            slot.write(NIL);
        });
        Slab { nodes, free }
    }

    /// Stores a node and returns its handle.
    #[inline]
    pub fn insert(&mut self, node: OrderNode) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                let i = self.nodes.len();
                assert!(i < NIL as usize, "order arena full");
                self.nodes.push(node);
                i as u32
            }
        }
    }

    /// Releases a handle; the node must not be used again.
    #[inline]
    pub fn remove(&mut self, i: u32) {
        self.nodes[i as usize].leaves = 0;
        self.free.push(i);
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = OrderNode;
    #[inline]
    fn index(&self, i: u32) -> &OrderNode {
        &self.nodes[i as usize]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    #[inline]
    fn index_mut(&mut self, i: u32) -> &mut OrderNode {
        &mut self.nodes[i as usize]
    }
}
