//! The index shared between the watch tasks (writers) and the handlers (readers): the pure
//! `ClusterState` behind a lock, which kinds have listed, and a generation that wakes whoever
//! waits on a change. The tokio-facing half of the index; `crate::index` is the data.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
};

use crate::index::{ClusterState, Kind, Object, ObjectKey};

/// The index shared between the watch tasks (writers) and the handlers (readers).
#[derive(Clone)]
pub struct SharedIndex {
    inner: Arc<RwLock<IndexInner>>,
    /// Carries the generation after every change, for whoever waits on one.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for SharedIndex {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

#[derive(Default)]
struct IndexInner {
    state: ClusterState,
    synced: BTreeSet<Kind>,
    generation: u64,
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
        let mut inner = self.write();
        inner.state.apply(object);
        inner.generation += 1;
        self.changes.send_replace(inner.generation);
    }

    pub fn delete(&self, key: &ObjectKey) {
        let mut inner = self.write();
        inner.state.delete(key);
        inner.generation += 1;
        self.changes.send_replace(inner.generation);
    }

    /// A completed relist of `kind`; marks it synced.
    pub fn reset(&self, kind: Kind, objects: Vec<Object>) {
        let mut inner = self.write();
        inner.state.reset(kind, objects);
        inner.synced.insert(kind);
        inner.generation += 1;
        self.changes.send_replace(inner.generation);
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

    /// Bumped on every change; lets readers skip rebuilding an unchanged view.
    pub fn generation(&self) -> u64 {
        self.read().generation
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
