//! The cluster index: trimmed objects kept in memory, fed by watch events or a snapshot file.
//!
//! `ClusterState` is plain data changed only through `apply`, `delete` and `reset`, so it is
//! tested without streams, and the decisions read it without touching a lock or a runtime.
//! `crate::shared_index::SharedIndex` wraps it for the server.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    AttachmentInfo, BudgetInfo, ClaimInfo, CsiNodeInfo, EventInfo, HashMap, KeyedTable, Name, Names,
    NodeInfo, NsName, PodInfo, StorageClassInfo, VolumeInfo,
};

/// The kinds headroom watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Node,
    CsiNode,
    StorageClass,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    VolumeAttachment,
    /// The Warning Events about Pods headroom reads (LUN-cap incidents, kubelet evictions).
    Event,
    PodDisruptionBudget,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Node,
        Kind::CsiNode,
        Kind::StorageClass,
        Kind::PersistentVolume,
        Kind::PersistentVolumeClaim,
        Kind::Pod,
        Kind::VolumeAttachment,
        Kind::Event,
        Kind::PodDisruptionBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::CsiNode => "CSINode",
            Kind::StorageClass => "StorageClass",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Pod => "Pod",
            Kind::VolumeAttachment => "VolumeAttachment",
            Kind::Event => "Event",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }
}

/// One trimmed object of any watched kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Node(NodeInfo),
    CsiNode(CsiNodeInfo),
    StorageClass(StorageClassInfo),
    Volume(VolumeInfo),
    Claim(ClaimInfo),
    Pod(PodInfo),
    Attachment(AttachmentInfo),
    Event(EventInfo),
    Budget(BudgetInfo),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::CsiNode(_) => Kind::CsiNode,
            Object::StorageClass(_) => Kind::StorageClass,
            Object::Volume(_) => Kind::PersistentVolume,
            Object::Claim(_) => Kind::PersistentVolumeClaim,
            Object::Pod(_) => Kind::Pod,
            Object::Attachment(_) => Kind::VolumeAttachment,
            Object::Event(_) => Kind::Event,
            Object::Budget(_) => Kind::PodDisruptionBudget,
        }
    }
}

/// Identifies an object for deletion without needing its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Name,
    pub name: Name,
}

impl Object {
    /// The key this object is stored under.
    pub fn key(&self) -> ObjectKey {
        let (namespace, name) = match self {
            Object::Node(o) => (Name::default(), o.name.clone()),
            Object::CsiNode(o) => (Name::default(), o.name.clone()),
            Object::StorageClass(o) => (Name::default(), o.name.clone()),
            Object::Volume(o) => (Name::default(), o.name.clone()),
            Object::Claim(o) => (o.namespace.clone(), o.name.clone()),
            Object::Pod(o) => (o.namespace.clone(), o.name.clone()),
            Object::Attachment(o) => (Name::default(), o.name.clone()),
            Object::Event(o) => (o.namespace.clone(), o.name.clone()),
            Object::Budget(o) => (o.namespace.clone(), o.name.clone()),
        };
        ObjectKey {
            kind: self.kind(),
            namespace,
            name,
        }
    }

    /// Makes the names this object shares with others (namespaces, nodes, claims, PVs,
    /// drivers) the one allocation `names` holds for each. A name only one object has is not
    /// interned (pods, attachments, Events, volume handles): pods come and go with new names,
    /// and each would only cost the set a slot. A volume handle is shared as it is: the
    /// accounting's volume keys are clones of the PV's.
    fn intern(&mut self, names: &mut Names) {
        match self {
            Object::Node(o) => names.intern(&mut o.name),
            Object::CsiNode(o) => names.intern(&mut o.name),
            Object::StorageClass(o) => names.intern(&mut o.name),
            Object::Volume(o) => {
                names.intern(&mut o.name);
                names.intern_opt(&mut o.csi_driver);
                o.pinned_to.iter_mut().for_each(|n| names.intern(n));
            }
            Object::Claim(o) => {
                names.intern(&mut o.namespace);
                names.intern(&mut o.name);
                names.intern_opt(&mut o.storage_class);
                names.intern_opt(&mut o.volume_name);
            }
            Object::Pod(o) => {
                names.intern(&mut o.namespace);
                names.intern_opt(&mut o.node_name);
                o.claims.iter_mut().for_each(|n| names.intern(n));
            }
            Object::Attachment(o) => {
                names.intern(&mut o.attacher);
                names.intern(&mut o.node_name);
                names.intern_opt(&mut o.pv_name);
            }
            Object::Event(o) => names.intern(&mut o.namespace),
            Object::Budget(o) => names.intern(&mut o.namespace),
        }
    }
}

/// Every watched object, keyed by name (cluster-scoped) or namespace/name.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub nodes: BTreeMap<Name, NodeInfo>,
    pub csi_nodes: HashMap<Name, CsiNodeInfo>,
    pub storage_classes: HashMap<Name, StorageClassInfo>,
    pub volumes: HashMap<Name, VolumeInfo>,
    pub claims: KeyedTable<ClaimInfo>,
    /// Read freely; change only through `apply`, `delete` and `reset`, which keep the pods
    /// without a node indexed. Boxed and keyed by their own names: 150,000 pods fill a table
    /// of 262,144 slots, and a slot holding a pointer instead of a key and a pod saves 38 MB.
    pub pods: KeyedTable<Box<PodInfo>>,
    pub attachments: HashMap<Name, AttachmentInfo>,
    /// LUN-cap incidents and kubelet evictions (core Events live an hour: what must last
    /// longer is counted in the tick's durable windows).
    pub events: BTreeMap<NsName, EventInfo>,
    pub budgets: BTreeMap<NsName, BudgetInfo>,
    /// The pods without a node, kept as pods change: planning looks at them on every tick, and
    /// they are a handful among 150,000.
    unscheduled: BTreeSet<NsName>,
    /// The shared names of every object above.
    names: Names,
}

/// Two states are equal when they hold the same objects (how their names are shared is not
/// what they say).
impl PartialEq for ClusterState {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
            && self.csi_nodes == other.csi_nodes
            && self.storage_classes == other.storage_classes
            && self.volumes == other.volumes
            && self.claims == other.claims
            && self.pods == other.pods
            && self.attachments == other.attachments
            && self.events == other.events
            && self.budgets == other.budgets
    }
}

impl ClusterState {
    /// The pods without a node (terminal ones included).
    pub fn unscheduled_pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.unscheduled
            .iter()
            .filter_map(|id| self.pods.get(id))
            .map(|p| &**p)
    }

    /// Builds a state from a list of objects (a snapshot file).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut state = Self::default();
        for o in objects {
            state.apply(o);
        }
        state
    }

    /// Adds or replaces an object; returns the one it replaced.
    pub fn apply(&mut self, mut object: Object) -> Option<Object> {
        object.intern(&mut self.names);
        match object {
            Object::Node(o) => self.nodes.insert(o.name.clone(), o).map(Object::Node),
            Object::CsiNode(o) => self.csi_nodes.insert(o.name.clone(), o).map(Object::CsiNode),
            Object::StorageClass(o) => self
                .storage_classes
                .insert(o.name.clone(), o)
                .map(Object::StorageClass),
            Object::Volume(o) => self.volumes.insert(o.name.clone(), o).map(Object::Volume),
            Object::Claim(o) => self.claims.insert(o).map(Object::Claim),
            Object::Pod(o) => {
                let id = (o.namespace.clone(), o.name.clone());
                if o.node_name.is_none() {
                    self.unscheduled.insert(id.clone());
                } else {
                    self.unscheduled.remove(&id);
                }
                self.pods.insert(Box::new(o)).map(|old| Object::Pod(*old))
            }
            Object::Attachment(o) => self.attachments.insert(o.name.clone(), o).map(Object::Attachment),
            Object::Event(o) => self
                .events
                .insert((o.namespace.clone(), o.name.clone()), o)
                .map(Object::Event),
            Object::Budget(o) => self
                .budgets
                .insert((o.namespace.clone(), o.name.clone()), o)
                .map(Object::Budget),
        }
    }

    /// Removes an object and returns it; removing one that is not there is not an error
    /// (watches repeat).
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Object> {
        let name = &key.name;
        let namespaced = || (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Node => self.nodes.remove(name).map(Object::Node),
            Kind::CsiNode => self.csi_nodes.remove(name).map(Object::CsiNode),
            Kind::StorageClass => self.storage_classes.remove(name).map(Object::StorageClass),
            Kind::PersistentVolume => self.volumes.remove(name).map(Object::Volume),
            Kind::PersistentVolumeClaim => self.claims.remove(&namespaced()).map(Object::Claim),
            Kind::Pod => {
                self.unscheduled.remove(&namespaced());
                self.pods.remove(&namespaced()).map(|old| Object::Pod(*old))
            }
            Kind::VolumeAttachment => self.attachments.remove(name).map(Object::Attachment),
            Kind::Event => self.events.remove(&namespaced()).map(Object::Event),
            Kind::PodDisruptionBudget => self.budgets.remove(&namespaced()).map(Object::Budget),
        }
    }

    /// Replaces every object of `kind` with `objects` (a relist): what was deleted while the
    /// watch was down disappears.
    pub fn reset(&mut self, kind: Kind, objects: Vec<Object>) {
        match kind {
            Kind::Node => self.nodes.clear(),
            Kind::CsiNode => self.csi_nodes.clear(),
            Kind::StorageClass => self.storage_classes.clear(),
            Kind::PersistentVolume => self.volumes.clear(),
            Kind::PersistentVolumeClaim => self.claims.clear(),
            Kind::Pod => {
                self.pods.clear();
                self.unscheduled.clear();
            }
            Kind::VolumeAttachment => self.attachments.clear(),
            Kind::Event => self.events.clear(),
            Kind::PodDisruptionBudget => self.budgets.clear(),
        }
        for o in objects.into_iter().filter(|o| o.kind() == kind) {
            self.apply(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Object {
        Object::Node(NodeInfo {
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn reset_drops_objects_deleted_while_disconnected() {
        let mut s = ClusterState::default();
        s.apply(node("a"));
        s.apply(node("b"));
        s.apply(Object::Attachment(AttachmentInfo {
            name: "va".into(),
            ..Default::default()
        }));
        s.reset(Kind::Node, vec![node("b"), node("c")]);
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(s.attachments.len(), 1, "a reset touches only its own kind");
    }

    #[test]
    fn the_pods_without_a_node_follow_applies_deletes_and_relists() {
        let pod = |name: &str, node: Option<&str>| {
            Object::Pod(PodInfo {
                namespace: "a".into(),
                name: name.into(),
                node_name: node.map(Name::from),
                ..Default::default()
            })
        };
        let unscheduled = |s: &ClusterState| {
            let mut names: Vec<Name> = s.unscheduled_pods().map(|p| p.name.clone()).collect();
            names.sort();
            names
        };
        let mut s = ClusterState::default();
        s.apply(pod("p1", None));
        s.apply(pod("p2", None));
        s.apply(pod("p3", Some("n1")));
        assert_eq!(unscheduled(&s), ["p1", "p2"]);
        s.apply(pod("p1", Some("n1")));
        s.delete(&pod("p2", None).key());
        s.apply(pod("p3", None));
        assert_eq!(unscheduled(&s), ["p3"]);
        s.reset(Kind::Pod, vec![pod("p4", None), pod("p5", Some("n2"))]);
        assert_eq!(unscheduled(&s), ["p4"]);
    }

    #[test]
    fn delete_of_a_missing_object_is_harmless() {
        let mut s = ClusterState::default();
        s.delete(&node("ghost").key());
        s.apply(node("a"));
        s.delete(&node("a").key());
        assert!(s.nodes.is_empty());
    }
}
