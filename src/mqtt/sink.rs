//! Where messages go: the broker (the MQTT session), or standard output for `--dry-run`.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::message::Message;
use super::session::Session;
use crate::error::{Error, Result};
use crate::signal::SIGNAL_CHECK;

/// Where messages go: stdout for `--dry-run`, else the broker.
pub trait Output {
    fn publish(&mut self, messages: &[Message]) -> Result<()>;
    /// Waits until `until` (or a message arrives); returns what arrived.
    fn wait(&mut self, until: Instant) -> Vec<(String, Vec<u8>)>;
    /// Publishes `last`, delivers everything, and ends cleanly.
    fn close(&mut self, last: &[Message]) -> Result<()>;
    /// The retained messages of `topics`, within `wait`; `None` while the broker's state
    /// cannot be read (see [`Session::retained`]).
    fn retained(
        &mut self,
        topics: &[String],
        probe: &str,
        wait: Duration,
    ) -> Option<Vec<(String, Vec<u8>)>>;
    /// Whether messages reach their destination now.
    fn is_connected(&self) -> bool;
    /// How many times the destination was connected to (the first time included).
    fn connects(&self) -> u32 {
        0
    }
    /// What keeps the destination's session alive during a long poll, if it needs that.
    fn tender(&self) -> Option<Box<dyn FnMut()>> {
        None
    }
}

/// Prints `topic [retained] payload` lines.
pub struct Stdout;

impl Output for Stdout {
    fn publish(&mut self, messages: &[Message]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let closed = |e: std::io::Error| match e.kind() {
            // `--dry-run | head`: the reader has what it wanted.
            std::io::ErrorKind::BrokenPipe => Error::OutputClosed,
            _ => Error::File(format!("cannot write to standard output: {e}")),
        };
        for m in messages {
            writeln!(out, "{m}").map_err(closed)?;
        }
        out.flush().map_err(closed)
    }

    fn wait(&mut self, until: Instant) -> Vec<(String, Vec<u8>)> {
        let now = Instant::now();
        std::thread::sleep(until.min(now + SIGNAL_CHECK).saturating_duration_since(now));
        Vec::new()
    }

    fn close(&mut self, last: &[Message]) -> Result<()> {
        self.publish(last)
    }

    fn retained(&mut self, _: &[String], _: &str, _: Duration) -> Option<Vec<(String, Vec<u8>)>> {
        Some(Vec::new())
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// The broker session, shared with the Envoy client's hook that tends it between the
/// requests of a long poll (one thread: the loop never holds it across a poll).
pub struct Broker(Rc<RefCell<Session>>);

impl Broker {
    pub fn new(session: Session) -> Broker {
        Broker(Rc::new(RefCell::new(session)))
    }
}

impl Output for Broker {
    fn publish(&mut self, messages: &[Message]) -> Result<()> {
        self.0.borrow_mut().publish(messages);
        Ok(())
    }

    fn wait(&mut self, until: Instant) -> Vec<(String, Vec<u8>)> {
        self.0.borrow_mut().wait(until)
    }

    fn close(&mut self, last: &[Message]) -> Result<()> {
        self.0.borrow_mut().close(last)
    }

    fn retained(
        &mut self,
        topics: &[String],
        probe: &str,
        wait: Duration,
    ) -> Option<Vec<(String, Vec<u8>)>> {
        self.0.borrow_mut().retained(topics, probe, wait)
    }

    fn is_connected(&self) -> bool {
        self.0.borrow().is_connected()
    }

    fn connects(&self) -> u32 {
        self.0.borrow().connects
    }

    fn tender(&self) -> Option<Box<dyn FnMut()>> {
        let session = self.0.clone();
        Some(Box::new(move || session.borrow_mut().tend()))
    }
}
