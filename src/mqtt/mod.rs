//! The broker side: the message type, an MQTT 3.1.1 session of our own over a blocking
//! socket (plain or TLS) with rumqttc's packet codec, our PUBLISH encoder, what is done
//! with incoming packets too big to take, and the sink
//! that sends messages to the broker or, with `--dry-run`, to standard output.

pub mod link;
pub mod message;
pub mod oversize;
pub mod packet;
pub mod session;
pub mod sink;

pub use message::Message;
pub use session::Session;
pub use sink::{Broker, Output, Stdout};
