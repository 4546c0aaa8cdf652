//! The per-connection table of functions the peer may call.

use std::collections::HashMap;

use super::callback::Callback;
use super::path::Path;
use crate::error::{ErrorKind, KiteError};

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

/// The default of [`CallbackTable::with_limit`]: functions one connection keeps for its peer.
pub const DEFAULT_MAX_FUNCTIONS: usize = 10_000;

/// Ids for the functions we send on one connection.
///
/// Ids count up from 0 per connection, as in Go. A response callback is removed when it is
/// answered, so a long-lived connection making millions of calls holds only the calls in
/// flight (the Go original keeps every one forever). A [`Callback`] sent again keeps its id;
/// one that appears at several places of one message gets one id per place (a JSON object
/// cannot map one id to two paths), and those ids are reused the next time.
///
/// The functions kept are bounded ([`CallbackTable::with_limit`], default
/// [`DEFAULT_MAX_FUNCTIONS`]): a message that would register more fails with a
/// `requestLimitError`, so a peer cannot make a connection hold functions without end (for
/// instance by having its own functions echoed back, each forwarded under a new id).
#[derive(Debug)]
pub struct CallbackTable<P, F = Callback> {
    next: u64,
    entries: HashMap<u64, Entry<P, F>>,
    /// The ids of each [`Callback`] (by identity), one per place it has had in one message.
    ids: HashMap<usize, Vec<u64>>,
    pending: usize,
    max_functions: usize,
}

impl<P, F> Default for CallbackTable<P, F> {
    fn default() -> Self {
        CallbackTable {
            next: 0,
            entries: HashMap::new(),
            ids: HashMap::new(),
            pending: 0,
            max_functions: DEFAULT_MAX_FUNCTIONS,
        }
    }
}

/// The error of a message that would keep more functions than the table allows.
pub(crate) fn too_many_functions(limit: usize) -> KiteError {
    KiteError::new(
        ErrorKind::RequestLimit,
        format!("too many functions sent on this connection (limit {limit})"),
    )
}

impl<P> CallbackTable<P> {
    /// Ids for the functions of one message, in order: a function keeps the ids it had,
    /// and gets one more for each further place it takes in this message. Nothing is
    /// registered if that would pass the limit.
    pub fn register_all(&mut self, functions: &[(Path, Callback)]) -> Result<Vec<u64>, KiteError> {
        self.check_room(functions)?;
        let mut taken: HashMap<usize, usize> = HashMap::new();
        let mut out = Vec::with_capacity(functions.len());
        for (_, cb) in functions {
            let nth = taken.entry(cb.key()).or_default();
            let known = self
                .ids
                .get(&cb.key())
                .and_then(|ids| ids.get(*nth))
                .copied();
            let id = match known {
                Some(id) => id,
                None => {
                    let id = self.alloc();
                    self.entries.insert(id, Entry::Callback(cb.clone()));
                    self.ids.entry(cb.key()).or_default().push(id);
                    id
                }
            };
            *nth += 1;
            out.push(id);
        }
        Ok(out)
    }

    /// Whether the functions of one message fit within the limit (`requestLimitError` if not):
    /// only functions new on this connection, and further places of one function, take room.
    pub fn check_room(&self, functions: &[(Path, Callback)]) -> Result<(), KiteError> {
        let mut uses: HashMap<usize, usize> = HashMap::new();
        let mut new = 0;
        for (_, cb) in functions {
            let n = uses.entry(cb.key()).or_default();
            *n += 1;
            if *n > self.ids.get(&cb.key()).map_or(0, Vec::len) {
                new += 1;
            }
        }
        if self.functions_len() + new > self.max_functions {
            return Err(too_many_functions(self.max_functions));
        }
        Ok(())
    }

    /// The id of `cb` (its first), registering it if it is new on this connection.
    pub fn register(&mut self, cb: &Callback) -> Result<u64, KiteError> {
        let ids = self.register_all(&[(Vec::new(), cb.clone())])?;
        Ok(ids[0])
    }
}

impl<P, F: Clone> CallbackTable<P, F> {
    /// The function registered as `id`, if any.
    #[cfg(test)]
    pub(crate) fn entries_get(&self, id: u64) -> Option<F> {
        match self.entries.get(&id)? {
            Entry::Callback(f) => Some(f.clone()),
            Entry::Pending(_) => None,
        }
    }

    /// An empty table keeping at most [`DEFAULT_MAX_FUNCTIONS`] functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table keeping at most `max_functions` functions.
    pub fn with_limit(max_functions: usize) -> Self {
        CallbackTable {
            max_functions,
            ..Self::default()
        }
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Whether `n` more functions fit within the limit (`requestLimitError` if not).
    pub fn check_room_for(&self, n: usize) -> Result<(), KiteError> {
        if self.functions_len() + n > self.max_functions {
            return Err(too_many_functions(self.max_functions));
        }
        Ok(())
    }

    /// Registers functions under fresh ids, one each (they have no identity to reuse ids by).
    /// Nothing is registered if that would pass the limit.
    pub fn insert_all(
        &mut self,
        functions: impl ExactSizeIterator<Item = F>,
    ) -> Result<Vec<u64>, KiteError> {
        self.check_room_for(functions.len())?;
        Ok(functions
            .map(|f| {
                let id = self.alloc();
                self.entries.insert(id, Entry::Callback(f));
                id
            })
            .collect())
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
    fn functions_stay_and_keep_their_ids() {
        let mut t: CallbackTable<()> = CallbackTable::new();
        let cb = Callback::new(|_| {});
        let id = t.register(&cb).unwrap();
        assert_eq!(t.register(&cb.clone()).unwrap(), id);
        assert!(matches!(t.take(id), Some(Entry::Callback(_))));
        assert!(matches!(t.take(id), Some(Entry::Callback(_))));
        assert_eq!(t.cancel(id), None);
        assert_eq!(t.len(), 1);
        t.insert_pending(());
        assert_eq!(t.drain_pending().len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn one_function_in_several_places_gets_an_id_per_place_and_reuses_them() {
        let mut t: CallbackTable<()> = CallbackTable::new();
        let (a, b) = (Callback::new(|_| {}), Callback::new(|_| {}));
        let places = [
            (vec![], a.clone()),
            (vec![], b.clone()),
            (vec![], a.clone()),
            (vec![], a.clone()),
        ];
        let ids = t.register_all(&places).unwrap();
        assert_eq!(ids, [0, 1, 2, 3]);
        // The same message again: the same ids, nothing new kept.
        assert_eq!(t.register_all(&places).unwrap(), ids);
        assert_eq!(t.functions_len(), 4);
        // Every id reaches the function of its place.
        for (id, (_, cb)) in ids.iter().zip(&places) {
            let Some(Entry::Callback(found)) = t.take(*id) else {
                panic!()
            };
            assert!(found.ptr_eq(cb));
        }
    }

    #[test]
    fn the_limit_refuses_a_whole_message() {
        let mut t: CallbackTable<()> = CallbackTable::with_limit(3);
        let fns: Vec<(Path, Callback)> = (0..4).map(|_| (vec![], Callback::new(|_| {}))).collect();
        let e = t.register_all(&fns).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RequestLimit);
        assert_eq!(t.functions_len(), 0, "nothing half-registered");
        t.register_all(&fns[..3]).unwrap();
        t.register_all(&fns[..3]).unwrap();
        assert!(t.register_all(&fns[3..]).is_err());
        let mut plain: CallbackTable<(), u8> = CallbackTable::with_limit(2);
        assert!(plain.insert_all([1u8, 2, 3].into_iter()).is_err());
        assert_eq!(plain.insert_all([1u8, 2].into_iter()).unwrap(), [0, 1]);
    }
}
