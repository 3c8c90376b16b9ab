//! The exporter's queue: FIFO, bounded by estimated bytes (queued plus in flight); when full,
//! the oldest queued items make room for the newest.

use std::collections::VecDeque;

/// Items waiting to be batched, with their estimated sizes.
#[derive(Debug)]
pub(super) struct Queue<T> {
    items: VecDeque<(T, usize)>,
    queued_bytes: usize,
    in_flight_bytes: usize,
    max_bytes: usize,
    max_items: usize,
}

/// A batch taken from the queue.
#[derive(Debug)]
pub(super) struct Batch<T> {
    /// The items, oldest first.
    pub(super) items: Vec<T>,
    /// Their estimated bytes (released with [`Queue::release`] once the batch is done).
    pub(super) bytes: usize,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `max_bytes` (queued plus in flight) and at most
    /// `max_items` queued items.
    pub(super) fn new(max_bytes: usize, max_items: usize) -> Self {
        Self {
            items: VecDeque::new(),
            queued_bytes: 0,
            in_flight_bytes: 0,
            max_bytes,
            max_items: max_items.max(1),
        }
    }

    /// Appends an item, evicting the oldest queued items while over the cap; returns them.
    ///
    /// An item larger than the whole cap is returned itself (it could never be held).
    pub(super) fn push(&mut self, item: T, bytes: usize) -> Vec<T> {
        let mut evicted = Vec::new();
        if bytes > self.max_bytes {
            evicted.push(item);
            return evicted;
        }
        while self.queued_bytes + self.in_flight_bytes + bytes > self.max_bytes
            || self.items.len() >= self.max_items
        {
            let Some((old, old_bytes)) = self.items.pop_front() else {
                // Only in-flight data is left: the newcomer cannot fit.
                evicted.push(item);
                return evicted;
            };
            self.queued_bytes -= old_bytes;
            evicted.push(old);
        }
        self.queued_bytes += bytes;
        self.items.push_back((item, bytes));
        evicted
    }

    /// Takes up to `max` of the oldest items; their bytes count as in flight until released.
    pub(super) fn take(&mut self, max: usize) -> Batch<T> {
        let n = max.min(self.items.len());
        let mut bytes = 0;
        let items = self
            .items
            .drain(..n)
            .map(|(item, b)| {
                bytes += b;
                item
            })
            .collect();
        self.queued_bytes -= bytes;
        self.in_flight_bytes += bytes;
        Batch { items, bytes }
    }

    /// Releases the bytes of a finished batch.
    pub(super) fn release(&mut self, bytes: usize) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// Removes every queued item.
    pub(super) fn drain_all(&mut self) -> Vec<T> {
        self.queued_bytes = 0;
        self.items.drain(..).map(|(item, _)| item).collect()
    }

    /// Items queued.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Estimated bytes held, queued plus in flight.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_batches() {
        let mut q = Queue::new(1000, usize::MAX);
        for i in 0..5 {
            assert!(q.push(i, 10).is_empty());
        }
        let b = q.take(3);
        assert_eq!(b.items, [0, 1, 2]);
        assert_eq!(b.bytes, 30);
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 50, "in-flight bytes still count");
        q.release(b.bytes);
        assert_eq!(q.bytes(), 20);
        assert_eq!(q.take(10).items, [3, 4]);
    }

    #[test]
    fn drops_oldest_past_the_cap() {
        let mut q = Queue::new(100, usize::MAX);
        for i in 0..10 {
            assert!(q.push(i, 10).is_empty());
        }
        assert_eq!(q.push(10, 10), [0]);
        assert_eq!(q.push(11, 25), [1, 2, 3]);
        assert!(q.bytes() <= 100);
        let all = q.drain_all();
        assert_eq!(all, [4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn in_flight_bytes_count_against_the_cap() {
        let mut q = Queue::new(100, usize::MAX);
        for i in 0..10 {
            q.push(i, 10);
        }
        let batch = q.take(6);
        assert_eq!(
            q.push(10, 10),
            [6],
            "60 in flight + 40 queued: the oldest queued goes"
        );
        q.release(batch.bytes);
        assert!(q.push(11, 10).is_empty());
        // Everything queued evicted and still no room: the newcomer is dropped.
        let mut q = Queue::new(100, usize::MAX);
        q.push(0, 60);
        let _in_flight = q.take(1);
        q.push(1, 30);
        assert_eq!(q.push(2, 50), [1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_item_cap_drops_oldest_too() {
        let mut q = Queue::new(1 << 20, 3);
        for i in 0..3 {
            assert!(q.push(i, 10).is_empty());
        }
        assert_eq!(q.push(3, 10), [0]);
        assert_eq!(q.drain_all(), [1, 2, 3]);
    }

    #[test]
    fn oversized_items_are_refused() {
        let mut q = Queue::new(100, usize::MAX);
        q.push(1, 10);
        assert_eq!(q.push(2, 101), [2]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn memory_stays_under_the_cap_under_a_flood() {
        let mut q = Queue::new(64 << 10, usize::MAX);
        let mut dropped = 0;
        for i in 0..100_000u32 {
            dropped += q.push(i, 100 + (i as usize % 900)).len();
            assert!(q.bytes() <= 64 << 10);
        }
        assert!(dropped > 99_000);
        let rest = q.drain_all();
        assert_eq!(*rest.last().unwrap(), 99_999, "the newest item survives");
        assert!(rest.windows(2).all(|w| w[0] < w[1]), "order is kept");
    }
}
