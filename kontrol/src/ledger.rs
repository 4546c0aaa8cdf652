//! What one Kontrol process keeps for the peers it serves: for each kite id registered through
//! it, who owns it, which kite key and which way in (a dnode connection, or HTTP from an
//! address) registered it and when it was last heard of; the connections that registered or
//! watch; the watchers; and the counts its budgets are checked against.
//!
//! Every count is kept up to date as registrations come, are replaced, go stale and as
//! connections end, so checking a budget is a few map lookups (never a storage scan). The counts
//! are this process's alone: Kontrols sharing a storage each count what was registered through
//! them.
//!
//! A register is two steps around the storage write: [`Ledger::reserve`] checks the budgets and
//! holds the slots it needs (so concurrent registers cannot overshoot), then [`Ledger::commit`]
//! records the registration once the storage accepted it, or [`Ledger::release`] gives the slots
//! back when it did not.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use kite_native::core::Kite as KiteIdentity;
use kite_native::{Callback, Client};

use crate::query::{Matcher, audience};

/// How a registration came and is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `register` over the dnode connection with this serial; its `kite.heartbeat` pings keep
    /// it alive.
    Dnode(u64),
    /// `POST /register` from this remote address (when the server knows it); `GET /heartbeat`
    /// from the same address keeps it alive.
    Http(Option<IpAddr>),
}

/// The budgets (see `KontrolOptions` for their meaning and defaults).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budgets {
    pub(crate) per_user: usize,
    pub(crate) per_key: usize,
    pub(crate) per_connection: usize,
    pub(crate) watchers_per_connection: usize,
}

/// Why a registration or a watch was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The id is live and registered (through this Kontrol) by another user.
    Owned,
    /// A budget is used up; the message names it.
    Limit(String),
}

struct Entry {
    kite: KiteIdentity,
    key: String,
    via: Via,
    last_seen_ms: u64,
    /// When the heartbeat that asked for the last storage refresh came (0: refresh on the next).
    refreshed_ms: u64,
    /// A storage refresh was asked for and has not come back: heartbeats ask for no other, so a
    /// storage that falls behind holds one due refresh per kite, not one per refresh interval.
    refresh_pending: bool,
    /// The expiry this Kontrol last wrote to the storage for it (what
    /// [`crate::storage::Storage::delete_written`] is given when it goes).
    written_ms: u64,
}

/// A registration the ledger let go (its connection ended, or it went stale): the storage
/// entry to delete, and whether its watchers hear `DEREGISTER`.
#[derive(Debug)]
pub(crate) struct Gone {
    pub(crate) kite: KiteIdentity,
    /// The expiry last written for it.
    pub(crate) written_ms: u64,
    /// It came over dnode (HTTP registrations are not announced).
    pub(crate) announced: bool,
}

impl Gone {
    fn of(e: Entry) -> Gone {
        Gone {
            announced: matches!(e.via, Via::Dnode(_)),
            kite: e.kite,
            written_ms: e.written_ms,
        }
    }
}

struct Conn {
    client: Client,
    session: String,
    /// Kite ids registered over this connection (and reserved by registers in flight).
    ids: HashSet<String>,
    watchers: usize,
}

/// A `getKites` caller watching a query.
struct Watcher {
    id: u64,
    conn: u64,
    matcher: Matcher,
    username: String,
    callback: Callback,
}

#[derive(Default)]
struct State {
    kites: HashMap<String, Entry>,
    users: HashMap<String, usize>,
    keys: HashMap<String, usize>,
    conns: HashMap<u64, Conn>,
    /// Connection serials by SockJS session id (to find a `Client` without scanning them all).
    sessions: HashMap<String, Vec<u64>>,
    watchers: Vec<Watcher>,
    next_conn: u64,
    next_watcher: u64,
}

/// The slots a register holds between [`Ledger::reserve`] and [`Ledger::commit`] or
/// [`Ledger::release`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Reservation {
    id: String,
    owner: String,
    key: String,
    conn: Option<u64>,
    user_slot: bool,
    key_slot: bool,
    conn_slot: bool,
}

/// What [`Ledger::commit`] found.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The id was kept alive over the same connection already: no new keep-alive is needed.
    pub(crate) already_kept: bool,
    /// Another user's expired dnode registration of the id that this one replaced (its watchers
    /// hear `DEREGISTER`).
    pub(crate) replaced: Option<KiteIdentity>,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// No live registration of the id came this way: nothing was touched.
    Unknown,
    /// Noted; the storage was refreshed a moment ago.
    Alive,
    /// Noted; refresh the storage for this owner.
    Refresh(String),
}

/// Counts of what the ledger holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) registrations: usize,
    pub(crate) users: usize,
    pub(crate) keys: usize,
    pub(crate) connections: usize,
    pub(crate) watchers: usize,
}

/// A watcher to call: its id, the token audience, its callback and its username.
pub(crate) type Notified = (u64, String, Callback, String);

/// The bookkeeping of one Kontrol process.
pub(crate) struct Ledger {
    state: Mutex<State>,
    budgets: Budgets,
    ttl_ms: u64,
    refresh_gap_ms: u64,
}

fn up(counts: &mut HashMap<String, usize>, key: &str) {
    *counts.entry(key.to_owned()).or_default() += 1;
}

fn down(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Ledger {
    /// A ledger whose registrations go stale `ttl_ms` after they were last heard of and whose
    /// heartbeats refresh the storage at most once every `refresh_gap_ms` per registration.
    pub(crate) fn new(budgets: Budgets, ttl_ms: u64, refresh_gap_ms: u64) -> Ledger {
        Ledger {
            state: Mutex::default(),
            budgets,
            ttl_ms,
            refresh_gap_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The serial of `client`'s connection, and whether it is new (then the caller arranges for
    /// [`Ledger::disconnected`] when it ends).
    pub(crate) fn connection(&self, client: &Client) -> (u64, bool) {
        let session = client.session_info().map(|i| i.id).unwrap_or_default();
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(serials) = st.sessions.get(&session)
            && let Some(found) = serials
                .iter()
                .find(|s| st.conns.get(s).is_some_and(|c| c.client.ptr_eq(client)))
        {
            return (*found, false);
        }
        st.next_conn += 1;
        let serial = st.next_conn;
        st.conns.insert(
            serial,
            Conn {
                client: client.clone(),
                session: session.clone(),
                ids: HashSet::new(),
                watchers: 0,
            },
        );
        st.sessions.entry(session).or_default().push(serial);
        (serial, true)
    }

    /// The connection `serial` ended: its watchers go, and so do the registrations it kept
    /// alive (a kite that comes back registers again), which are returned.
    pub(crate) fn disconnected(&self, serial: u64) -> Vec<Gone> {
        let mut st = self.lock();
        let mut gone = Vec::new();
        if let Some(conn) = st.conns.remove(&serial) {
            if let Some(serials) = st.sessions.get_mut(&conn.session) {
                serials.retain(|s| *s != serial);
                if serials.is_empty() {
                    st.sessions.remove(&conn.session);
                }
            }
            for id in &conn.ids {
                if st
                    .kites
                    .get(id)
                    .is_some_and(|e| e.via == Via::Dnode(serial))
                    && let Some(e) = Self::remove(&mut st, id)
                {
                    gone.push(Gone::of(e));
                }
            }
        }
        st.watchers.retain(|w| w.conn != serial);
        gone
    }

    /// Checks that `kite` (owned by its username) may be registered with kite key `key` the
    /// way `via` says, and holds the slots it needs.
    pub(crate) fn reserve(
        &self,
        kite: &KiteIdentity,
        key: &str,
        via: Via,
        now_ms: u64,
    ) -> Result<Reservation, Refusal> {
        let mut st = self.lock();
        let st = &mut *st;
        let (id, owner) = (&kite.id, &kite.username);
        let existing = st.kites.get(id);
        if let Some(e) = existing
            && e.kite.username != *owner
            && now_ms.saturating_sub(e.last_seen_ms) < self.ttl_ms
        {
            return Err(Refusal::Owned);
        }
        let same = existing.filter(|e| e.kite.username == *owner);
        let user_slot = same.is_none();
        let key_slot = same.is_none_or(|e| e.key != key);
        let conn = match via {
            Via::Dnode(c) => Some(c),
            Via::Http(_) => None,
        };
        let conn_slot = conn
            .and_then(|c| st.conns.get(&c))
            .is_some_and(|c| !c.ids.contains(id));
        let b = &self.budgets;
        if user_slot && st.users.get(owner).copied().unwrap_or(0) >= b.per_user {
            return Err(Refusal::Limit(format!(
                "user {owner:?} has {} live registrations on this Kontrol, its budget \
                 (max_registrations_per_user)",
                b.per_user
            )));
        }
        if key_slot && st.keys.get(key).copied().unwrap_or(0) >= b.per_key {
            return Err(Refusal::Limit(format!(
                "this kite key has {} live registrations on this Kontrol, its budget \
                 (max_registrations_per_key)",
                b.per_key
            )));
        }
        if conn_slot
            && conn
                .and_then(|c| st.conns.get(&c))
                .is_some_and(|c| c.ids.len() >= b.per_connection)
        {
            return Err(Refusal::Limit(format!(
                "this connection has registered {} kite ids, its budget \
                 (max_registrations_per_connection)",
                b.per_connection
            )));
        }
        if user_slot {
            up(&mut st.users, owner);
        }
        if key_slot {
            up(&mut st.keys, key);
        }
        if conn_slot && let Some(c) = conn.and_then(|c| st.conns.get_mut(&c)) {
            c.ids.insert(id.clone());
        }
        Ok(Reservation {
            id: id.clone(),
            owner: owner.clone(),
            key: key.to_owned(),
            conn,
            user_slot,
            key_slot,
            conn_slot,
        })
    }

    /// Gives back the slots of a register the storage refused.
    pub(crate) fn release(&self, r: Reservation) {
        let mut st = self.lock();
        let st = &mut *st;
        if r.user_slot {
            down(&mut st.users, &r.owner);
        }
        if r.key_slot {
            down(&mut st.keys, &r.key);
        }
        if r.conn_slot
            && let Some(c) = r.conn
        {
            let kept_here = st.kites.get(&r.id).is_some_and(|e| e.via == Via::Dnode(c));
            if !kept_here && let Some(conn) = st.conns.get_mut(&c) {
                conn.ids.remove(&r.id);
            }
        }
    }

    /// Records the registration of `kite` the storage accepted (with expiry `written_ms`),
    /// replacing what the ledger held for its id.
    pub(crate) fn commit(
        &self,
        r: Reservation,
        kite: KiteIdentity,
        via: Via,
        now_ms: u64,
        written_ms: u64,
    ) -> Committed {
        let mut st = self.lock();
        let st = &mut *st;
        // The reservation's slots become the entry's (counted again below).
        if r.user_slot {
            down(&mut st.users, &r.owner);
        }
        if r.key_slot {
            down(&mut st.keys, &r.key);
        }
        let mut committed = Committed::default();
        if let Some(old) = st.kites.remove(&kite.id) {
            down(&mut st.users, &old.kite.username);
            down(&mut st.keys, &old.key);
            if let Via::Dnode(c) = old.via
                && old.via != via
                && let Some(conn) = st.conns.get_mut(&c)
            {
                conn.ids.remove(&kite.id);
            }
            committed.already_kept = old.via == via && matches!(via, Via::Dnode(_));
            if old.kite.username != kite.username && matches!(old.via, Via::Dnode(_)) {
                committed.replaced = Some(old.kite);
            }
        }
        up(&mut st.users, &kite.username);
        up(&mut st.keys, &r.key);
        if let Via::Dnode(c) = via
            && let Some(conn) = st.conns.get_mut(&c)
        {
            conn.ids.insert(kite.id.clone());
        }
        st.kites.insert(
            kite.id.clone(),
            Entry {
                kite,
                key: r.key,
                via,
                last_seen_ms: now_ms,
                refreshed_ms: now_ms,
                refresh_pending: false,
                written_ms,
            },
        );
        committed
    }

    /// A heartbeat for kite `id` came the way `via` says.
    pub(crate) fn heard(&self, id: &str, via: Via, now_ms: u64) -> Heard {
        let mut st = self.lock();
        let Some(e) = st.kites.get_mut(id) else {
            return Heard::Unknown;
        };
        if e.via != via || now_ms.saturating_sub(e.last_seen_ms) >= self.ttl_ms {
            return Heard::Unknown;
        }
        e.last_seen_ms = now_ms;
        if e.refresh_pending || now_ms.saturating_sub(e.refreshed_ms) < self.refresh_gap_ms {
            return Heard::Alive;
        }
        e.refreshed_ms = now_ms;
        e.refresh_pending = true;
        Heard::Refresh(e.kite.username.clone())
    }

    /// The storage refresh [`Ledger::heard`] asked for for `id` kept `via` came back, however it
    /// went: the next heartbeat due may ask for another.
    pub(crate) fn refresh_settled(&self, id: &str, via: Via) {
        if let Some(e) = self.lock().kites.get_mut(id)
            && e.via == via
        {
            e.refresh_pending = false;
        }
    }

    /// The storage refresh of `id` kept `via` wrote expiry `written_ms`; `false` if the ledger
    /// no longer holds the id at all (it went while the write was on its way: the caller deletes
    /// what it wrote).
    pub(crate) fn refreshed(&self, id: &str, via: Via, written_ms: u64) -> bool {
        let mut st = self.lock();
        match st.kites.get_mut(id) {
            Some(e) if e.via == via => {
                e.written_ms = e.written_ms.max(written_ms);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The storage refresh of `id` kept `via` failed: the next heartbeat asks for another.
    pub(crate) fn refresh_failed(&self, id: &str, via: Via) {
        if let Some(e) = self.lock().kites.get_mut(id)
            && e.via == via
        {
            e.refreshed_ms = 0;
            e.refresh_pending = false;
        }
    }

    fn remove(st: &mut State, id: &str) -> Option<Entry> {
        let e = st.kites.remove(id)?;
        down(&mut st.users, &e.kite.username);
        down(&mut st.keys, &e.key);
        if let Via::Dnode(c) = e.via
            && let Some(conn) = st.conns.get_mut(&c)
        {
            conn.ids.remove(id);
        }
        Some(e)
    }

    /// Drops the registration of `id` kept `via` (the storage says another user owns the id
    /// now); the kite, if one was dropped and its watchers are to hear `DEREGISTER`.
    pub(crate) fn forget(&self, id: &str, via: Via) -> Option<KiteIdentity> {
        let mut st = self.lock();
        if st.kites.get(id).is_none_or(|e| e.via != via) {
            return None;
        }
        Self::remove(&mut st, id)
            .filter(|e| matches!(e.via, Via::Dnode(_)))
            .map(|e| e.kite)
    }

    /// Drops the registrations not heard of for the registration TTL, and returns them.
    pub(crate) fn sweep(&self, now_ms: u64) -> Vec<Gone> {
        let mut st = self.lock();
        let stale: Vec<String> = st
            .kites
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_seen_ms) >= self.ttl_ms)
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .iter()
            .filter_map(|id| Self::remove(&mut st, id))
            .map(Gone::of)
            .collect()
    }

    /// Adds a watcher of `matcher` on connection `conn`, within its budget, and returns its
    /// id. A connection that has ended already gets none (and no error: nobody is there to
    /// hear it).
    pub(crate) fn watch(
        &self,
        conn: u64,
        matcher: Matcher,
        username: String,
        callback: Callback,
    ) -> Result<Option<u64>, Refusal> {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(c) = st.conns.get_mut(&conn) else {
            return Ok(None);
        };
        if c.watchers >= self.budgets.watchers_per_connection {
            return Err(Refusal::Limit(format!(
                "this connection watches {} queries, its budget (max_watchers_per_connection)",
                self.budgets.watchers_per_connection
            )));
        }
        c.watchers += 1;
        st.next_watcher += 1;
        st.watchers.push(Watcher {
            id: st.next_watcher,
            conn,
            matcher,
            username,
            callback,
        });
        Ok(Some(st.next_watcher))
    }

    /// Ends the watcher `id` if connection `conn` started it (no connection can end another's
    /// watch); whether it did.
    pub(crate) fn cancel_watch(&self, conn: u64, id: u64) -> bool {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(at) = st
            .watchers
            .iter()
            .position(|w| w.id == id && w.conn == conn)
        else {
            return false;
        };
        st.watchers.remove(at);
        if let Some(c) = st.conns.get_mut(&conn) {
            c.watchers = c.watchers.saturating_sub(1);
        }
        true
    }

    /// The watchers whose query matches `kite`.
    pub(crate) fn watchers_of(&self, kite: &KiteIdentity) -> Vec<Notified> {
        self.lock()
            .watchers
            .iter()
            .filter(|w| w.matcher.matches(kite))
            .map(|w| {
                (
                    w.id,
                    audience(w.matcher.query(), kite),
                    w.callback.clone(),
                    w.username.clone(),
                )
            })
            .collect()
    }

    /// Drops the watchers `gone` (their callbacks failed).
    pub(crate) fn unwatch(&self, gone: &[u64]) {
        let mut st = self.lock();
        let st = &mut *st;
        let conns = &mut st.conns;
        st.watchers.retain(|w| {
            let keep = !gone.contains(&w.id);
            if !keep && let Some(c) = conns.get_mut(&w.conn) {
                c.watchers = c.watchers.saturating_sub(1);
            }
            keep
        });
    }

    /// What it holds.
    pub(crate) fn counts(&self) -> Counts {
        let st = self.lock();
        Counts {
            registrations: st.kites.len(),
            users: st.users.len(),
            keys: st.keys.len(),
            connections: st.conns.len(),
            watchers: st.watchers.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kite(user: &str, id: &str) -> KiteIdentity {
        format!("/{user}/prod/math/1.0.0/eu/h/{id}")
            .parse()
            .unwrap()
    }

    fn ledger(per_user: usize, per_key: usize, per_connection: usize) -> Ledger {
        Ledger::new(
            Budgets {
                per_user,
                per_key,
                per_connection,
                watchers_per_connection: 2,
            },
            1_000,
            100,
        )
    }

    fn register(
        l: &Ledger,
        k: &KiteIdentity,
        key: &str,
        via: Via,
        now: u64,
    ) -> Result<Committed, Refusal> {
        let r = l.reserve(k, key, via, now)?;
        Ok(l.commit(r, k.clone(), via, now, now + 1_000))
    }

    const HERE: Via = Via::Http(None);

    #[test]
    fn budgets_per_user_and_key_and_what_frees_them() {
        let l = ledger(3, 2, 16);
        register(&l, &kite("m", "a"), "k1", HERE, 0).unwrap();
        register(&l, &kite("m", "b"), "k1", HERE, 0).unwrap();
        // The same id again (same owner) takes no new slot.
        register(&l, &kite("m", "b"), "k1", HERE, 10).unwrap();
        let Err(Refusal::Limit(m)) = register(&l, &kite("m", "c"), "k1", HERE, 0) else {
            panic!("per key")
        };
        assert!(m.contains("max_registrations_per_key"), "{m}");
        register(&l, &kite("m", "c"), "k2", HERE, 0).unwrap();
        let Err(Refusal::Limit(m)) = register(&l, &kite("m", "d"), "k2", HERE, 0) else {
            panic!("per user")
        };
        assert!(m.contains("max_registrations_per_user"), "{m}");
        // Another user is not held back, and cannot take a live id.
        register(&l, &kite("o", "d"), "k3", HERE, 0).unwrap();
        assert_eq!(
            register(&l, &kite("o", "a"), "k3", HERE, 0).unwrap_err(),
            Refusal::Owned
        );
        assert_eq!(
            l.counts(),
            Counts {
                registrations: 4,
                users: 2,
                keys: 3,
                ..Counts::default()
            }
        );
        // A refused storage write gives its slots back.
        let r = l.reserve(&kite("o", "e"), "k4", HERE, 0).unwrap();
        l.release(r);
        assert_eq!(l.counts().keys, 3);
        // Heard of: stays; stale: swept, and every count goes with it.
        assert_eq!(l.heard("b", HERE, 500), Heard::Refresh("m".into()));
        assert_eq!(l.heard("b", HERE, 550), Heard::Alive);
        assert_eq!(
            l.heard("b", Via::Http(Some([127, 0, 0, 2].into())), 550),
            Heard::Unknown
        );
        let swept = l.sweep(1_200);
        assert_eq!(swept.len(), 3);
        assert!(
            swept.iter().all(|g| !g.announced),
            "HTTP ones are not announced"
        );
        assert_eq!(swept[0].written_ms, 1_000);
        assert_eq!(l.counts().registrations, 1);
        // After expiry another user may take the id; it replaces the stale entry.
        register(&l, &kite("o", "b"), "k3", HERE, 1_600).unwrap();
        assert_eq!(l.counts().users, 1);
        l.sweep(10_000);
        assert_eq!(l.counts(), Counts::default());
    }

    #[test]
    fn one_refresh_at_a_time_per_kite_however_late_the_storage_is() {
        let l = ledger(8, 8, 8);
        register(&l, &kite("m", "a"), "k1", HERE, 0).unwrap();
        assert_eq!(l.heard("a", HERE, 100), Heard::Refresh("m".into()));
        // The refresh is still on its way several refresh gaps later: no second one.
        for t in [200, 300, 400] {
            assert_eq!(l.heard("a", HERE, t), Heard::Alive, "at {t}");
        }
        l.refresh_settled("a", HERE);
        assert_eq!(l.heard("a", HERE, 410), Heard::Refresh("m".into()));
        // A failed one is asked for again at once.
        l.refresh_failed("a", HERE);
        assert_eq!(l.heard("a", HERE, 420), Heard::Refresh("m".into()));
        // Settling another way's refresh changes nothing.
        l.refresh_settled("a", Via::Http(Some([127, 0, 0, 2].into())));
        assert_eq!(l.heard("a", HERE, 600), Heard::Alive);
    }

    #[tokio::test]
    async fn connections_budget_their_ids_and_watchers() {
        let k = kite_native::Kite::new("t", "1.0.0").unwrap();
        let (one, two) = (
            k.new_client("http://127.0.0.1:1/kite"),
            k.new_client("http://127.0.0.1:1/kite"),
        );
        let l = ledger(100, 100, 2);
        let (c1, new) = l.connection(&one);
        assert!(new);
        assert_eq!(l.connection(&one), (c1, false));
        let (c2, _) = l.connection(&two);
        assert_ne!(c1, c2);
        register(&l, &kite("m", "a"), "k", Via::Dnode(c1), 0).unwrap();
        let again = register(&l, &kite("m", "a"), "k", Via::Dnode(c1), 0).unwrap();
        assert!(again.already_kept);
        register(&l, &kite("m", "b"), "k", Via::Dnode(c1), 0).unwrap();
        let Err(Refusal::Limit(m)) = register(&l, &kite("m", "c"), "k", Via::Dnode(c1), 0) else {
            panic!("per connection")
        };
        assert!(m.contains("max_registrations_per_connection"), "{m}");
        // Moving an id to another connection frees its slot on the first.
        let moved = register(&l, &kite("m", "a"), "k", Via::Dnode(c2), 0).unwrap();
        assert!(!moved.already_kept);
        register(&l, &kite("m", "c"), "k", Via::Dnode(c1), 0).unwrap();
        // Pings count only from the connection that keeps the id.
        assert_eq!(l.heard("a", Via::Dnode(c1), 200), Heard::Unknown);
        assert_eq!(
            l.heard("a", Via::Dnode(c2), 200),
            Heard::Refresh("m".into())
        );

        let m = Matcher::new(&kite("m", "a").query()).unwrap();
        let cb = || Callback::new(|_| {});
        l.watch(c1, m.clone(), "w".into(), cb()).unwrap();
        l.watch(c1, m.clone(), "w".into(), cb()).unwrap();
        assert!(matches!(
            l.watch(c1, m.clone(), "w".into(), cb()),
            Err(Refusal::Limit(_))
        ));
        let gone: Vec<u64> = l
            .watchers_of(&kite("m", "a"))
            .iter()
            .map(|w| w.0)
            .take(1)
            .collect();
        l.unwatch(&gone);
        let third = l.watch(c1, m.clone(), "w".into(), cb()).unwrap().unwrap();
        assert_eq!(l.counts().watchers, 2);
        // Only its own connection cancels a watch, once.
        assert!(!l.cancel_watch(c2, third));
        assert!(l.cancel_watch(c1, third));
        assert!(!l.cancel_watch(c1, third));
        l.watch(c1, m.clone(), "w".into(), cb()).unwrap();
        assert_eq!(l.counts().watchers, 2);

        // The connection ends: its watchers, slots and the registrations it kept go at once.
        let mut gone: Vec<String> = l.disconnected(c1).into_iter().map(|g| g.kite.id).collect();
        gone.sort();
        assert_eq!(gone, ["b", "c"]);
        assert!(l.watch(c1, m, "w".into(), cb()).is_ok());
        let counts = l.counts();
        assert_eq!(
            (counts.connections, counts.watchers, counts.registrations),
            (1, 0, 1)
        );
        assert!(l.sweep(1_100).is_empty(), "a was heard at 200");
        // A write on its way when the id went: the caller is told to delete it.
        assert!(l.refreshed("a", Via::Dnode(c2), 5_000));
        assert!(!l.refreshed("b", Via::Dnode(c1), 5_000));
        l.refresh_failed("a", Via::Dnode(c2));
        assert_eq!(
            l.heard("a", Via::Dnode(c2), 210),
            Heard::Refresh("m".into()),
            "a failed refresh is asked for again at once"
        );
        let gone = l.disconnected(c2);
        assert_eq!(
            (gone.len(), gone[0].written_ms, gone[0].announced),
            (1, 5_000, true)
        );
        assert_eq!(l.counts(), Counts::default());
    }
}
