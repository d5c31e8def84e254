//! Fair queues: work waits in one queue per key (a configuration) within
//! its group (a tenant), and workers take it group by group in turn, and
//! within a group key by key in turn. A key with a long backlog or slow
//! work makes its own queue long; it never holds back another key's, and
//! a group never holds more than its share of the workers.
//!
//! This module owns the queues' bounds and the turn order. It must never
//! run the work itself nor sleep on a worker's behalf: a key or group with
//! nothing to do, or with all its worker slots taken, is simply not in the
//! turn.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// The bounds of a [`FairQueue`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Items one key may have waiting.
    pub per_key: usize,
    /// Items one group may have waiting, all its keys together.
    pub per_group: usize,
    /// Items all groups may have waiting.
    pub total: usize,
    /// Work items of one group being worked on at once.
    pub group_workers: usize,
}

/// Queues keyed by `K` within groups `G`, served round robin at both levels.
pub struct FairQueue<G, K, T> {
    state: Mutex<State<G, K, T>>,
    /// Wakes a worker when work joins the turn.
    work: Notify,
    /// Wakes pushers waiting for room.
    room: Notify,
    bounds: Bounds,
}

struct State<G, K, T> {
    groups: HashMap<G, Group<K, T>>,
    /// Groups with a key in their turn and a free worker slot.
    turn: VecDeque<G>,
    len: usize,
    closed: bool,
}

struct Group<K, T> {
    keys: HashMap<K, Key<T>>,
    /// Keys with work and a free worker slot.
    turn: VecDeque<K>,
    in_turn: bool,
    busy: usize,
    len: usize,
}

struct Key<T> {
    items: VecDeque<T>,
    in_turn: bool,
    busy: usize,
    /// Workers this key may hold at once.
    limit: usize,
}

/// Why an item was not queued; it is handed back.
#[derive(Debug)]
pub enum Refused<T> {
    /// Its key's or group's queue (or all of them) stayed full for the wait.
    Full(T),
    Closed(T),
}

impl<G: Eq + Hash + Clone, K: Eq + Hash + Clone, T> FairQueue<G, K, T> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            state: Mutex::new(State { groups: HashMap::new(), turn: VecDeque::new(), len: 0, closed: false }),
            work: Notify::new(),
            room: Notify::new(),
            bounds: Bounds {
                per_key: bounds.per_key.max(1),
                per_group: bounds.per_group.max(1),
                total: bounds.total.max(1),
                group_workers: bounds.group_workers.max(1),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<G, K, T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` under `group` and `key` (which may hold `limit`
    /// workers at once), waiting up to `wait` for room: a full key or group
    /// slows down its own producers only.
    pub async fn push(&self, group: &G, key: &K, limit: usize, item: T, wait: Duration) -> Result<(), Refused<T>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut item = item;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so that a pop in between wakes us.
            room.as_mut().enable();
            match self.try_push(group, key, limit, item) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(back)) => item = back,
                Err(closed) => return Err(closed),
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Refused::Full(item));
            }
        }
    }

    /// Queues `item` if there is room now.
    pub fn try_push(&self, group: &G, key: &K, limit: usize, item: T) -> Result<(), Refused<T>> {
        let bounds = self.bounds;
        let mut guard = self.lock();
        let s = &mut *guard;
        if s.closed {
            return Err(Refused::Closed(item));
        }
        if s.len >= bounds.total {
            return Err(Refused::Full(item));
        }
        let g = s.groups.entry(group.clone()).or_insert_with(|| Group {
            keys: HashMap::new(),
            turn: VecDeque::new(),
            in_turn: false,
            busy: 0,
            len: 0,
        });
        let queued = g.keys.get(key).map_or(0, |k| k.items.len());
        if g.len >= bounds.per_group || queued >= bounds.per_key {
            return Err(Refused::Full(item));
        }
        let k = g.keys.entry(key.clone()).or_insert_with(|| Key { items: VecDeque::new(), in_turn: false, busy: 0, limit });
        k.limit = limit.max(1);
        k.items.push_back(item);
        g.len += 1;
        s.len += 1;
        let woke = schedule(group, key, g, &mut s.turn, bounds.group_workers);
        drop(guard);
        if woke {
            self.work.notify_one();
        }
        Ok(())
    }

    /// The next turn's work, up to `max` items of one key, for one worker;
    /// `None` once closed. The caller hands the slot back with
    /// [`FairQueue::done`] when it finished that work.
    pub async fn next(&self, max: usize) -> Option<(G, K, Vec<T>)> {
        let bounds = self.bounds;
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            {
                let mut guard = self.lock();
                let s = &mut *guard;
                if let Some(group) = s.turn.pop_front() {
                    let g = s.groups.get_mut(&group).expect("a group in the turn exists");
                    g.in_turn = false;
                    let key = g.turn.pop_front().expect("a group in the turn has a key in its turn");
                    let k = g.keys.get_mut(&key).expect("a key in the turn exists");
                    k.in_turn = false;
                    let take = k.items.len().min(max.max(1));
                    let batch: Vec<T> = k.items.drain(..take).collect();
                    k.busy += 1;
                    g.busy += 1;
                    g.len -= batch.len();
                    s.len -= batch.len();
                    // Still work and a free slot: back in the turn, behind
                    // every other key of the group, and the group behind
                    // every other group.
                    schedule(&group, &key, g, &mut s.turn, bounds.group_workers);
                    let more = !s.turn.is_empty();
                    drop(guard);
                    self.room.notify_waiters();
                    if more {
                        self.work.notify_one();
                    }
                    return Some((group, key, batch));
                }
                if s.closed {
                    return None;
                }
            }
            work.await;
        }
    }

    /// A worker finished the work it took for `group` and `key`.
    pub fn done(&self, group: &G, key: &K) {
        let bounds = self.bounds;
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(g) = s.groups.get_mut(group) else {
            return;
        };
        let Some(k) = g.keys.get_mut(key) else { return };
        k.busy = k.busy.saturating_sub(1);
        g.busy = g.busy.saturating_sub(1);
        let woke = schedule(group, key, g, &mut s.turn, bounds.group_workers);
        if g.busy == 0 && g.len == 0 {
            s.groups.remove(group);
        }
        drop(guard);
        if woke {
            self.work.notify_one();
        }
    }

    /// Whether `key` of `group`, or `group` as a whole, has no room: what
    /// a producer checks before fetching more of its work.
    pub fn full(&self) -> (Vec<G>, Vec<K>) {
        let bounds = self.bounds;
        let s = self.lock();
        let mut groups = Vec::new();
        let mut keys = Vec::new();
        for (name, g) in &s.groups {
            if g.len >= bounds.per_group {
                groups.push(name.clone());
            }
            keys.extend(g.keys.iter().filter(|(_, k)| k.items.len() >= bounds.per_key).map(|(name, _)| name.clone()));
        }
        (groups, keys)
    }

    /// Calls `f` on every item waiting, under the queues' lock.
    pub fn each(&self, mut f: impl FnMut(&T)) {
        let s = self.lock();
        for key in s.groups.values().flat_map(|g| g.keys.values()) {
            key.items.iter().for_each(&mut f);
        }
    }

    /// Items waiting under `group` and `key`.
    pub fn waiting(&self, group: &G, key: &K) -> usize {
        let s = self.lock();
        s.groups.get(group).and_then(|g| g.keys.get(key)).map_or(0, |k| k.items.len())
    }

    /// Items waiting, all groups together.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Room left, all groups together.
    pub fn room(&self) -> usize {
        self.bounds.total.saturating_sub(self.lock().len)
    }

    /// Stops the workers; what is left in the queues is dropped (it is
    /// stored, and found again after a restart). Only the tests close a
    /// queue: the engine's end with its process.
    #[cfg(test)]
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_waiters();
        self.room.notify_waiters();
    }
}

/// Puts `key` in its group's turn, and the group in the turn, where they
/// have work and a free slot and are not there yet; drops an idle key.
/// `true` when the group joined the turn.
fn schedule<G: Clone, K: Eq + Hash + Clone, T>(
    group: &G,
    key: &K,
    g: &mut Group<K, T>,
    turn: &mut VecDeque<G>,
    group_workers: usize,
) -> bool {
    if let Some(k) = g.keys.get_mut(key) {
        if !k.in_turn && !k.items.is_empty() && k.busy < k.limit {
            k.in_turn = true;
            g.turn.push_back(key.clone());
        } else if k.items.is_empty() && k.busy == 0 {
            g.keys.remove(key);
        }
    }
    if !g.in_turn && !g.turn.is_empty() && g.busy < group_workers {
        g.in_turn = true;
        turn.push_back(group.clone());
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(per_key: usize, per_group: usize, group_workers: usize) -> FairQueue<&'static str, &'static str, u32> {
        FairQueue::new(Bounds { per_key, per_group, total: 1000, group_workers })
    }

    #[tokio::test]
    async fn groups_take_turns_whatever_their_backlog() {
        let q = queue(1000, 1000, 1);
        for i in 0..100 {
            q.try_push(&"big", &"k", 1, i).unwrap();
        }
        q.try_push(&"small", &"k", 1, 1000).unwrap();
        let (g1, _, b1) = q.next(10).await.unwrap();
        let (g2, _, b2) = q.next(10).await.unwrap();
        assert_eq!((g1, b1.len()), ("big", 10));
        assert_eq!((g2, b2), ("small", vec![1000]), "the small group is served second, not after 100");
        q.done(&"small", &"k");
        // "big" uses its one worker slot: nothing else to take.
        assert!(tokio::time::timeout(Duration::from_millis(50), q.next(10)).await.is_err());
        q.done(&"big", &"k");
        let (g3, _, b3) = q.next(10).await.unwrap();
        assert_eq!((g3, b3[0]), ("big", 10), "in order within a key");
    }

    #[tokio::test]
    async fn keys_of_a_group_take_turns_and_keep_their_own_limits() {
        let q = queue(1000, 1000, 10);
        for i in 0..5 {
            q.try_push(&"t", &"slow", 2, i).unwrap();
        }
        q.try_push(&"t", &"fast", 2, 100).unwrap();
        assert_eq!(q.next(1).await.unwrap().1, "slow");
        assert_eq!(q.next(1).await.unwrap().1, "fast", "the other key's turn comes next");
        assert_eq!(q.next(1).await.unwrap().1, "slow");
        // "slow" holds its two slots: its other items wait, nothing is handed out.
        assert!(tokio::time::timeout(Duration::from_millis(50), q.next(1)).await.is_err());
        q.done(&"t", &"slow");
        assert_eq!(q.next(1).await.unwrap().2, vec![2]);
    }

    #[tokio::test]
    async fn a_full_key_or_group_refuses_only_its_own_items() {
        let q = queue(2, 3, 1);
        q.try_push(&"a", &"x", 1, 1).unwrap();
        q.try_push(&"a", &"x", 1, 2).unwrap();
        assert!(matches!(q.try_push(&"a", &"x", 1, 3), Err(Refused::Full(3))), "key full");
        q.try_push(&"a", &"y", 1, 4).unwrap();
        assert!(matches!(q.try_push(&"a", &"z", 1, 5), Err(Refused::Full(5))), "group full");
        q.try_push(&"b", &"x", 1, 6).unwrap();
        assert!(matches!(q.push(&"a", &"z", 1, 7, Duration::from_millis(20)).await, Err(Refused::Full(7))));
        let (groups, keys) = q.full();
        assert_eq!(groups, vec!["a"]);
        assert_eq!(keys, vec!["x"]);
    }

    #[tokio::test]
    async fn a_waiting_push_gets_room_when_its_key_is_served() {
        let q = std::sync::Arc::new(queue(1, 100, 1));
        q.try_push(&"a", &"k", 1, 1).unwrap();
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { q.push(&"a", &"k", 1, 2, Duration::from_secs(5)).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(q.next(10).await.unwrap().2, vec![1]);
        assert!(pusher.await.unwrap(), "room made by the pop");
        q.done(&"a", &"k");
        assert_eq!(q.next(10).await.unwrap().2, vec![2]);
    }

    #[tokio::test]
    async fn a_group_holds_at_most_its_workers() {
        let q = queue(100, 100, 2);
        for key in ["x", "y", "z"] {
            q.try_push(&"a", &key, 10, 1).unwrap();
        }
        q.try_push(&"b", &"x", 10, 2).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(q.next(1).await.unwrap().0);
        }
        assert_eq!(got, vec!["a", "b", "a"]);
        assert!(tokio::time::timeout(Duration::from_millis(50), q.next(1)).await.is_err(), "a holds its two slots");
        q.done(&"a", &"x");
        assert_eq!(q.next(1).await.unwrap().1, "z");
    }

    #[tokio::test]
    async fn close_wakes_idle_workers() {
        let q = std::sync::Arc::new(queue(10, 10, 1));
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.next(1).await.is_none() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        assert!(worker.await.unwrap());
    }
}
