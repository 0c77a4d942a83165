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
    cli::SourceArgs,
    index::{Kind, Object},
    model::quantity::QuantityError,
    shared_index::SharedIndex,
};

/// An opened cluster source: the index, and for a live cluster its watches and client.
pub struct Loaded {
    pub index: SharedIndex,
    /// The watch task (the caller decides whether it keeps running).
    pub watches: Option<tokio::task::JoinHandle<()>>,
    pub client: Option<kube::Client>,
}

/// Whether opening a live source waits until every kind has listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// One-shot commands: decide on a whole picture or not at all.
    Wait,
    /// `serve`: answer at once; `/readyz` says when the picture is whole.
    InBackground,
}

/// The index from the snapshot file, or from live watches (started here).
pub async fn open(source: &SourceArgs, listing: Listing) -> anyhow::Result<Loaded> {
    if let Some(path) = &source.snapshot {
        let started = std::time::Instant::now();
        let state = file::load(path)?;
        tracing::info!(
            file = %path.display(),
            nodes = state.nodes.len(),
            pods = state.pods.len(),
            claims = state.claims.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot loaded"
        );
        return Ok(Loaded {
            index: SharedIndex::from_state(state),
            watches: None,
            client: None,
        });
    }
    let client = live::client(source.kubeconfig.as_deref(), source.context.as_deref()).await?;
    let index = SharedIndex::default();
    let watches = tokio::spawn(live::watch_all(client.clone(), index.clone()));
    if listing == Listing::Wait && !index.wait_synced(source.sync_timeout).await {
        watches.abort();
        let missing: Vec<_> = index.unsynced().iter().map(|k| k.as_str()).collect();
        anyhow::bail!(
            "the API server did not list {} within {:?}",
            missing.join(", "),
            source.sync_timeout
        );
    }
    Ok(Loaded {
        index,
        watches: Some(watches),
        client: Some(client),
    })
}

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
