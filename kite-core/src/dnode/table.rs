//! The per-connection table of functions the peer may call.

use std::collections::HashMap;

use super::callback::Callback;

/// What an id in a [`CallbackTable`] stands for.
///
/// `F` is the kind of function sent: a [`Callback`] for [`crate::Connection`], whatever the
/// driver holds (a JavaScript function, say) for [`crate::tree::TreeConnection`].
#[derive(Debug)]
pub enum Entry<P, F = Callback> {
    /// A function we sent; the peer may call it any number of times while the connection lives.
    Callback(F),
    /// The response callback of a call we made; freed by its first invocation, by
    /// [`CallbackTable::cancel`] (timeout) or by [`CallbackTable::drain_pending`] (disconnect).
    /// `P` is the driver's handle for the waiting caller.
    Pending(P),
}

/// Ids for the functions we send on one connection.
///
/// Ids count up from 0 per connection, as in Go. A response callback is removed when it is
/// answered, so a long-lived connection making millions of calls holds only the calls in
/// flight (the Go original keeps every one forever). A function sent twice keeps its first id.
#[derive(Debug)]
pub struct CallbackTable<P, F = Callback> {
    next: u64,
    entries: HashMap<u64, Entry<P, F>>,
    ids: HashMap<usize, u64>,
    pending: usize,
}

impl<P, F> Default for CallbackTable<P, F> {
    fn default() -> Self {
        CallbackTable {
            next: 0,
            entries: HashMap::new(),
            ids: HashMap::new(),
            pending: 0,
        }
    }
}

impl<P> CallbackTable<P> {
    /// The id of `cb`, registering it if it is new on this connection.
    pub fn register(&mut self, cb: &Callback) -> u64 {
        if let Some(id) = self.ids.get(&cb.key()) {
            return *id;
        }
        let id = self.insert(cb.clone());
        self.ids.insert(cb.key(), id);
        id
    }
}

impl<P, F: Clone> CallbackTable<P, F> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Registers a function under a fresh id (no deduplication: see [`CallbackTable::register`]
    /// for [`Callback`]s, which have an identity).
    pub fn insert(&mut self, f: F) -> u64 {
        let id = self.alloc();
        self.entries.insert(id, Entry::Callback(f));
        id
    }

    /// Registers a response slot for a call in flight and returns its id.
    pub fn insert_pending(&mut self, pending: P) -> u64 {
        let id = self.alloc();
        self.entries.insert(id, Entry::Pending(pending));
        self.pending += 1;
        id
    }

    /// What the peer reaches by invoking `id`: a pending call is removed and returned, a
    /// function is returned and stays. `None` for unknown or already answered ids.
    pub fn take(&mut self, id: u64) -> Option<Entry<P, F>> {
        match self.entries.get(&id)? {
            Entry::Callback(cb) => Some(Entry::Callback(cb.clone())),
            Entry::Pending(_) => {
                self.pending -= 1;
                self.entries.remove(&id)
            }
        }
    }

    /// Whether `id` is a call waiting for its response.
    pub fn is_pending(&self, id: u64) -> bool {
        matches!(self.entries.get(&id), Some(Entry::Pending(_)))
    }

    /// Removes a pending call (its caller gave up), returning its handle.
    pub fn cancel(&mut self, id: u64) -> Option<P> {
        match self.entries.remove(&id) {
            Some(Entry::Pending(p)) => {
                self.pending -= 1;
                Some(p)
            }
            Some(other) => {
                self.entries.insert(id, other);
                None
            }
            None => None,
        }
    }

    /// Removes every pending call (the connection is gone) and returns their handles.
    /// Registered functions are dropped too.
    pub fn drain_pending(&mut self) -> Vec<P> {
        self.ids.clear();
        self.pending = 0;
        self.entries
            .drain()
            .filter_map(|(_, e)| match e {
                Entry::Pending(p) => Some(p),
                Entry::Callback(_) => None,
            })
            .collect()
    }

    /// Calls in flight.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// Functions registered (entries that are not calls in flight).
    pub fn functions_len(&self) -> usize {
        self.entries.len() - self.pending
    }

    /// All entries (functions and calls in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ids_are_freed_once() {
        let mut t: CallbackTable<&str> = CallbackTable::new();
        let a = t.insert_pending("a");
        let b = t.insert_pending("b");
        assert_eq!((a, b), (0, 1));
        assert!(matches!(t.take(a), Some(Entry::Pending("a"))));
        assert!(t.take(a).is_none(), "a second answer finds nothing");
        assert_eq!(t.cancel(b), Some("b"));
        assert!(t.is_empty());
    }

    #[test]
    fn functions_stay_and_dedupe() {
        let mut t: CallbackTable<()> = CallbackTable::new();
        let cb = Callback::new(|_| {});
        let id = t.register(&cb);
        assert_eq!(t.register(&cb.clone()), id);
        assert!(matches!(t.take(id), Some(Entry::Callback(_))));
        assert!(matches!(t.take(id), Some(Entry::Callback(_))));
        assert_eq!(t.cancel(id), None);
        assert_eq!(t.len(), 1);
        t.insert_pending(());
        assert_eq!(t.drain_pending().len(), 1);
        assert!(t.is_empty());
    }
}
