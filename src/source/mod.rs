//! Where cluster state comes from: a snapshot file or live watches, both trimmed the same way.

pub mod file;
pub mod live;

use k8s_openapi::{
    api::{
        core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod},
        policy::v1::PodDisruptionBudget,
        storage::v1::{CSINode, StorageClass, VolumeAttachment},
    },
    serde::de::DeserializeOwned,
};

use crate::{
    index::{Kind, Object},
    model::quantity::QuantityError,
};

/// A Kubernetes type headroom watches, and how it is trimmed into the index.
pub trait Watched:
    kube::Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    const KIND: Kind;
    /// The object trimmed to what decisions read; `None` for one headroom does not read (an
    /// Event of another reason).
    fn trim(&self) -> Result<Option<Object>, QuantityError>;
}

macro_rules! watched {
    ($ty:ty, $kind:ident, $variant:ident, try) => {
        impl Watched for $ty {
            const KIND: Kind = Kind::$kind;
            fn trim(&self) -> Result<Option<Object>, QuantityError> {
                Ok(Some(Object::$variant(self.try_into()?)))
            }
        }
    };
    ($ty:ty, $kind:ident, $variant:ident) => {
        impl Watched for $ty {
            const KIND: Kind = Kind::$kind;
            fn trim(&self) -> Result<Option<Object>, QuantityError> {
                Ok(Some(Object::$variant(self.into())))
            }
        }
    };
}

watched!(Node, Node, Node, try);
watched!(Pod, Pod, Pod, try);
watched!(CSINode, CsiNode, CsiNode);
watched!(StorageClass, StorageClass, StorageClass);
watched!(PersistentVolume, PersistentVolume, Volume);
watched!(PersistentVolumeClaim, PersistentVolumeClaim, Claim);
watched!(VolumeAttachment, VolumeAttachment, Attachment);
watched!(PodDisruptionBudget, PodDisruptionBudget, Budget);

impl Watched for Event {
    const KIND: Kind = Kind::Event;
    fn trim(&self) -> Result<Option<Object>, QuantityError> {
        Ok(crate::model::EventInfo::of(self).map(Object::Event))
    }
}

/// The Events headroom reads are Warnings about Pods (`FailedAttachVolume`, `Evicted`): one
/// field selector the API server filters on, the rest is trimmed away.
pub const EVENT_FIELDS: &str = "involvedObject.kind=Pod,type=Warning";
