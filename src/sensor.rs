//! The six lifetime counters the ledger follows, by name, and values kept one per counter.
//! Pure.

use std::ops::{Index, IndexMut};

use serde::{Deserialize, Serialize};

/// A lifetime counter the ledger follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sensor {
    Production,
    /// House consumption: measured on a total-consumption CT, derived on a net one.
    Consumption,
    Import,
    Export,
    /// Production less export: always derived.
    SelfConsumption,
    /// Import less export: the one counter that may go down.
    Net,
}

impl Sensor {
    /// Every sensor, in the order of the arrays of the state file.
    pub const ALL: [Sensor; 6] = [
        Sensor::Production,
        Sensor::Consumption,
        Sensor::Import,
        Sensor::Export,
        Sensor::SelfConsumption,
        Sensor::Net,
    ];

    /// The stem of its topics (`prod_eim` → `data/prod_eim_whLifetime`).
    pub const fn topic(self) -> &'static str {
        match self {
            Sensor::Production => "prod_eim",
            Sensor::Consumption => "conso_all_eim",
            Sensor::Import => "import_eim",
            Sensor::Export => "grid_eim",
            Sensor::SelfConsumption => "eco_eim",
            Sensor::Net => "conso_net_eim",
        }
    }
}

/// One value per [`Sensor`], indexed by it. Kept as a plain array of six, in the order of
/// [`Sensor::ALL`]: the format of the state file and of `P/S/ledger`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerSensor<T>(pub [T; 6]);

impl<T> Index<Sensor> for PerSensor<T> {
    type Output = T;

    fn index(&self, s: Sensor) -> &T {
        &self.0[s as usize]
    }
}

impl<T> IndexMut<Sensor> for PerSensor<T> {
    fn index_mut(&mut self, s: Sensor) -> &mut T {
        &mut self.0[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_plain_arrays_in_the_order_of_all() {
        let mut v = PerSensor::<f64>::default();
        for (n, s) in Sensor::ALL.into_iter().enumerate() {
            v[s] = n as f64;
        }
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "[0.0,1.0,2.0,3.0,4.0,5.0]"
        );
        let back: PerSensor<Option<f64>> = serde_json::from_str("[1,null,2,3,null,-4]").unwrap();
        assert_eq!(back[Sensor::Net], Some(-4.0));
        assert_eq!(back[Sensor::Consumption], None);
        let topics: Vec<&str> = Sensor::ALL.iter().map(|s| s.topic()).collect();
        assert_eq!(
            topics,
            [
                "prod_eim",
                "conso_all_eim",
                "import_eim",
                "grid_eim",
                "eco_eim",
                "conso_net_eim"
            ]
        );
    }
}
