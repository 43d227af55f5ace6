//! Topics and payloads (docs/topics.md): the topic tree, the `simple` and `json` payloads,
//! the messages of fields, the bridge's own status, and the commands it listens to. Pure.

pub mod commands;
pub mod compose;
pub mod payload;
pub mod status;
pub mod tree;

pub use commands::Command;
pub use compose::{Composer, LiveMessages};
pub use status::Health;
