//! The index shared between the watch tasks (writers) and the handlers (readers): the pure
//! `ClusterState` behind a lock, which kinds have listed, the accounting kept current with it
//! and published for lock-free reads, and a generation that wakes whoever waits on a change.
//! The tokio-facing half of the index; `crate::index` is the data.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
};

use arc_swap::ArcSwap;

use crate::{
    decide::{
        accounting::{self, ClusterView, Reservations, Settings},
        live_view::LiveView,
    },
    index::{ClusterState, Kind, Object, ObjectKey},
};

/// The index shared between the watch tasks (writers) and the handlers (readers).
#[derive(Clone)]
pub struct SharedIndex {
    inner: Arc<RwLock<IndexInner>>,
    /// Carries the generation after every change, for whoever waits on one.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The accounting as of the last change, swapped in by the writer that made it: a request
    /// reads it without a lock and keeps it as long as it decides.
    view: Arc<ArcSwap<ClusterView>>,
}

impl Default for SharedIndex {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
            view: Arc::default(),
        }
    }
}

#[derive(Default)]
struct IndexInner {
    state: ClusterState,
    synced: BTreeSet<Kind>,
    generation: u64,
    /// What the accounting is computed with, once a reader asked for it.
    settings: Option<Settings>,
    /// Ghost disks, held on top of what is watched.
    reserved: Reservations,
    /// The accounting kept current with `state`, once every kind has listed (before that,
    /// each relist would rebuild it from a half-listed cluster).
    live: Option<LiveView>,
}

impl IndexInner {
    /// Builds the accounting once it is asked for and every kind has listed.
    fn build_live(&mut self) {
        if self.synced.len() == Kind::ALL.len()
            && let Some(settings) = &self.settings
        {
            // The old one goes first: two at once would double the peak at 150k pods.
            self.live = None;
            let started = std::time::Instant::now();
            // The accounting and the indexes read the state apart: on two cores, side by side
            // (a relist of 150,000 pods waits for both).
            let (state, reserved) = (&self.state, &self.reserved);
            self.live = Some(std::thread::scope(|scope| {
                let view = scope.spawn(|| accounting::account(state, settings, reserved));
                let indexed = LiveView::indexed(state, settings.clone(), reserved.clone());
                // A panic while accounting is a bug, not bad input: let it surface.
                indexed.with_view(
                    view.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                )
            }));
            let built_ms = started.elapsed().as_millis() as u64;
            release_free_pages();
            tracing::info!(
                built_ms,
                trimmed_ms = started.elapsed().as_millis() as u64 - built_ms,
                "accounting built"
            );
        }
    }
}

/// Hands the heap's free pages back to the system. A full build follows the load or relist of
/// every object, whose decoding freed as much as it kept, scattered between what it kept:
/// glibc keeps those pages (15 MB resident after loading a 5,000-node snapshot).
fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks glibc's own heaps under their locks; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl SharedIndex {
    /// An index already holding `state`, every kind synced (snapshot mode).
    pub fn from_state(state: ClusterState) -> Self {
        let index = Self::default();
        {
            let mut inner = index.write();
            inner.state = state;
            inner.synced = Kind::ALL.into_iter().collect();
            inner.generation = 1;
        }
        index
    }

    // A poisoned lock means a writer panicked mid-update; the maps are still structurally
    // valid, so keep serving rather than cascade the panic into every handler.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn apply(&self, object: Object) {
        let key = object.key();
        let mut inner = self.write();
        let old = inner.state.apply(object);
        self.changed(&mut inner, |live, state| live.changed(state, &key, old.as_ref()));
    }

    pub fn delete(&self, key: &ObjectKey) {
        let mut inner = self.write();
        let old = inner.state.delete(key);
        self.changed(&mut inner, |live, state| live.changed(state, key, old.as_ref()));
    }

    /// A completed relist of `kind`; marks it synced. The accounting is built again.
    pub fn reset(&self, kind: Kind, objects: Vec<Object>) {
        let mut inner = self.write();
        inner.state.reset(kind, objects);
        inner.synced.insert(kind);
        inner.build_live();
        self.changed(&mut inner, |_, _| {});
    }

    /// Keeps the accounting current from now on, computed with `settings`.
    pub fn account(&self, settings: Settings) {
        let mut inner = self.write();
        inner.settings = Some(settings);
        inner.build_live();
        self.changed(&mut inner, |_, _| {});
    }

    /// Replaces the ghost disks the accounting holds on top of what is watched; returns the
    /// ones they replace.
    pub fn set_reserved(&self, reserved: Reservations) -> Reservations {
        let mut inner = self.write();
        if inner.reserved == reserved {
            return reserved;
        }
        let before = std::mem::replace(&mut inner.reserved, reserved.clone());
        self.changed(&mut inner, |live, state| live.set_reserved(state, reserved));
        before
    }

    /// After a change to `inner`: brings the accounting up to date with `update`, publishes
    /// it, and wakes whoever waits on a change. Under the write lock, so the view published
    /// last is always that of the state written last.
    fn changed(&self, inner: &mut IndexInner, update: impl FnOnce(&mut LiveView, &ClusterState)) {
        let IndexInner { state, live, .. } = inner;
        if let Some(live) = live {
            update(live, state);
            self.view.store(Arc::new(live.view().clone()));
        }
        inner.generation += 1;
        self.changes.send_replace(inner.generation);
    }

    /// The accounting as of the last change (empty until `account` was called and every kind
    /// has listed).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// Notified with the generation after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until every kind has listed; false if `timeout` passes first.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let synced = async {
            while !self.is_synced() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, synced).await.is_ok()
    }

    /// True once every kind has listed at least once.
    pub fn is_synced(&self) -> bool {
        self.read().synced.len() == Kind::ALL.len()
    }

    /// Kinds not yet listed.
    pub fn unsynced(&self) -> Vec<Kind> {
        let inner = self.read();
        Kind::ALL
            .into_iter()
            .filter(|k| !inner.synced.contains(k))
            .collect()
    }

    /// Runs `f` on the current state under the read lock.
    pub fn with_state<T>(&self, f: impl FnOnce(&ClusterState, u64) -> T) -> T {
        let inner = self.read();
        f(&inner.state, inner.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_only_when_every_kind_listed() {
        let index = SharedIndex::default();
        for kind in Kind::ALL {
            assert!(!index.is_synced());
            index.reset(kind, vec![]);
        }
        assert!(index.is_synced());
        assert!(index.unsynced().is_empty());
    }
}
