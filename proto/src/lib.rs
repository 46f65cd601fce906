//! Contracts shared by every Powehi process. No I/O lives here, except the
//! config-log follower behind the `kafka` feature, which every process needs
//! exactly alike (the raw-topic producer's settings sit beside it).
//!
//! Layout:
//! - `cli` (feature `cli`): the flags both processes share.
//! - [`topics`]: Kafka topic names and the envelope format version.
//! - [`event`]: the public event shape of the Events Tracking API and the envelope
//!   checks both the gateway (to refuse) and the worker (to build rows) apply.
//! - [`envelope`]: what the gateway writes to `powehi.events.raw`, one record per event.
//! - [`reason`]: machine-readable refusal / rejection reasons.
//! - [`config`]: data-source and event-schema records (bootstrap file format).
//! - [`schema`]: schema definitions checked, events validated and trimmed.
//! - `follower` (feature `kafka`): replays and follows `powehi.config`.
//! - `producer` (feature `kafka`): the settings of the raw-topic producer.
//! - [`time`]: ISO 8601 parsing with the range ClickHouse `DateTime` can hold.
//! - [`text`]: cutting text to a byte budget on a char boundary.

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod envelope;
pub mod event;
#[cfg(feature = "kafka")]
pub mod follower;
#[cfg(feature = "kafka")]
pub mod producer;
pub mod reason;
pub mod schema;
pub mod text;
pub mod time;
pub mod topics;

pub use envelope::{Envelope, ReplayMarker, RequestContext};
pub use event::{
    anonymous_profile_id, best_effort_ids, check_event, profile_of, BestEffortIds, EventFields,
    ItemRef,
};
pub use reason::{Reason, ReasonCode};
