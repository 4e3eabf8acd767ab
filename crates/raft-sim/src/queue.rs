//! The simulation's event queue: events ordered by `(virtual time,
//! sequence number)`. The heap holds only small keys; the events (some
//! carry whole messages) stay put in a slab, so that sifting the heap moves
//! 24 bytes instead of a message.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::config::Micros;

/// Times and sequence numbers must fit their bits of a key.
const TIME_LIMIT: Micros = 1 << 40;
const SEQ_LIMIT: u64 = 1 << 56;

/// A priority queue of `T` by `(time, seq)`; `seq` breaks ties in insertion
/// order, so the order is total and deterministic.
///
/// A heap key packs `time` (high 40 bits: virtual time stays below 2^40 µs,
/// 12 days), `seq` (next 56 bits) and the slot (low 32) into one `u128`, so
/// comparing keys is one wide comparison.
#[derive(Debug)]
pub struct EventQueue<T> {
    heap: BinaryHeap<Reverse<u128>>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Schedules `event` at `time` (after every event already scheduled at
    /// that time).
    pub fn push(&mut self, time: Micros, event: T) {
        self.seq += 1;
        assert!(
            time < TIME_LIMIT && self.seq < SEQ_LIMIT,
            "event queue key overflow"
        );
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(event);
                s
            }
            None => {
                self.slots.push(Some(event));
                // Bounded by the events in flight at once, far below 2^32.
                (self.slots.len() - 1) as u32
            }
        };
        let key = u128::from(time) << 88 | u128::from(self.seq) << 32 | u128::from(slot);
        self.heap.push(Reverse(key));
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(Micros, T)> {
        let Reverse(key) = self.heap.pop()?;
        let time = (key >> 88) as Micros;
        let slot = key as u32;
        let event = self.slots[slot as usize].take();
        self.free.push(slot);
        // Every key in the heap names a filled slot.
        event.map(|e| (time, e))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Micros> {
        self.heap.peek().map(|Reverse(k)| (*k >> 88) as Micros)
    }

    /// Number of events scheduled.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_insertion_order_and_reuses_slots() {
        let mut q = EventQueue::default();
        q.push(5, "b");
        q.push(3, "a");
        q.push(5, "c");
        assert_eq!(q.len(), 3);
        assert_eq!(q.peek_time(), Some(3));
        assert_eq!(q.pop(), Some((3, "a")));
        q.push(4, "d");
        assert_eq!(q.pop(), Some((4, "d")));
        assert_eq!(q.pop(), Some((5, "b")));
        assert_eq!(q.pop(), Some((5, "c")));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        // Three slots served four events.
        assert_eq!(q.slots.len(), 3);
    }
}
