//! The live values of a raw tick: the powers the CTs measure, as plain numbers, so
//! that a raw tick allocates nothing for them. Pure.

use super::field::{Field, Flow, Measure, Subject};
use super::snapshot::Snapshot;

/// What the live powers are of, in the order they are published.
pub const LIVE: [Subject; 4] = [
    Subject::Flow(Flow::Production),
    Subject::Flow(Flow::Net),
    Subject::Flow(Flow::Consumption),
    Subject::Battery,
];

/// The `raw` values: the powers the CTs measure, from one readings request (W), each
/// `None` where the Envoy has no CT for it. Plain numbers, so that a raw tick allocates
/// nothing for them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Live {
    /// Production, consumption from the grid (net, negative when exporting), the house's
    /// whole consumption, and the batteries' power (> 0 discharging): [`LIVE`] in this order.
    pub watts: [Option<f64>; 4],
}

impl Live {
    /// The values there are, as power fields, in [`LIVE`] order.
    pub fn values(&self) -> impl Iterator<Item = Field> + '_ {
        LIVE.iter()
            .zip(&self.watts)
            .filter_map(|(of, w)| w.map(|w| Field::new(*of, Measure::Power, w)))
    }

    pub fn is_empty(&self) -> bool {
        self.watts.iter().all(Option::is_none)
    }

    /// The power drawn from the grid (never negative), for the day's peak.
    pub fn import(&self) -> Option<f64> {
        self.watts[1].map(|w| w.max(0.0))
    }
}

/// The `raw` values of a snapshot.
pub fn live(s: &Snapshot) -> Live {
    let prod = s.production.as_ref().map(|p| p.power);
    let (net, all) = match (&s.net, &s.total, prod) {
        (Some(n), _, p) => (Some(n.power), p.map(|p| p + n.power)),
        (None, Some(t), p) => (p.map(|p| t.power - p), Some(t.power)),
        (None, None, _) => (None, None),
    };
    Live {
        watts: [prod, net, all, s.storage.as_ref().map(|b| b.power)],
    }
}
