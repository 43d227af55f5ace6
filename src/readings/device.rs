//! A device behind the Envoy that has topics of its own (a battery, a microinverter, a
//! relay), keyed by its serial, checked once where it is read: 1 to 24 ASCII letters and
//! digits, so that no answer can forge a topic (`/`, `+`, `#`) or an entity id. Pure.

/// The kind of a device behind the Envoy that has topics of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// One IQ Battery: `P/S/battery/{serial}/…`.
    Battery,
    /// One AC Battery (ACB): `P/S/battery/{serial}/…` too.
    AcBattery,
    /// One microinverter: `P/S/inverter/{serial}/…`.
    Inverter,
    /// One dry-contact relay of the IQ System Controller: `P/S/relay/{id}/state`.
    Relay,
}

impl DeviceKind {
    pub const fn word(self) -> &'static str {
        match self {
            DeviceKind::Battery | DeviceKind::AcBattery => "battery",
            DeviceKind::Inverter => "inverter",
            DeviceKind::Relay => "relay",
        }
    }
}

/// A device behind the Envoy, by its serial: 1 to 24 ASCII letters and digits, so that it
/// is safe in a topic (no `/`, `+`, `#`) and in an entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceKey {
    pub kind: DeviceKind,
    serial: [u8; 24],
    len: u8,
}

impl DeviceKey {
    /// `None` for a serial that is empty, longer than 24 or not letters and digits.
    pub fn new(kind: DeviceKind, serial: &str) -> Option<DeviceKey> {
        let ok =
            (1..=24).contains(&serial.len()) && serial.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        let mut bytes = [0; 24];
        bytes[..serial.len()].copy_from_slice(serial.as_bytes());
        Some(DeviceKey {
            kind,
            serial: bytes,
            len: serial.len() as u8,
        })
    }

    pub fn serial(&self) -> &str {
        // Only ASCII was copied in.
        std::str::from_utf8(&self.serial[..usize::from(self.len)]).unwrap_or_default()
    }
}
