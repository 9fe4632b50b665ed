//! The configuration engine: the in-memory, journaled replacement for SQL that every service
//! reads. Reading order: [`catalogue`] (what attributes exist), [`noderange`] and
//! [`expression`] (the two grammars), [`model`] (nodes, groups, resolution), [`plan`]
//! (validated changes), [`journal`] and [`engine`] (durability, the shared handle), [`watch`]
//! (change notification), [`secrets`] (encryption at rest), [`dump`] (backup and restore).

pub mod catalogue;
pub mod dump;
pub mod engine;
pub mod expression;
pub mod journal;
pub mod model;
pub mod noderange;
pub mod plan;
pub mod secrets;
pub mod watch;

pub use engine::{ConfigEngine, EngineOptions};
pub use model::Store;
pub use plan::{AttributeInput, ConfigChangeError};
