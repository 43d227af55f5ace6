//! Values kept one per flow (the lifetime counters the ledger follows): a plain array,
//! in the order of [`Flow::ALL`], indexed by the flow. Pure.

use std::ops::{Index, IndexMut};

use serde::{Deserialize, Deserializer, Serialize};

use crate::readings::Flow;

/// How many flows the ledger follows.
const FLOWS: usize = Flow::ALL.len();
/// How many a version 1 state file has (before the batteries' two).
const FLOWS_V1: usize = 6;

/// One value per [`Flow`], indexed by it. Kept as a plain array, in the order of
/// [`Flow::ALL`]: the format of the state file and of `P/S/ledger`. An array of a version
/// 1 file (six values, no battery) reads with the battery's values at their default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct PerFlow<T>(pub [T; FLOWS]);

impl<'de, T: Deserialize<'de> + Default + Copy> Deserialize<'de> for PerFlow<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values = Vec::<T>::deserialize(d)?;
        if values.len() != FLOWS && values.len() != FLOWS_V1 {
            return Err(serde::de::Error::invalid_length(
                values.len(),
                &"6 or 8 values, one per flow",
            ));
        }
        let mut out = [T::default(); FLOWS];
        out[..values.len()].copy_from_slice(&values);
        Ok(PerFlow(out))
    }
}

impl<T> Index<Flow> for PerFlow<T> {
    type Output = T;

    fn index(&self, f: Flow) -> &T {
        &self.0[f as usize]
    }
}

impl<T> IndexMut<Flow> for PerFlow<T> {
    fn index_mut(&mut self, f: Flow) -> &mut T {
        &mut self.0[f as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_plain_arrays_in_the_order_of_all() {
        let mut v = PerFlow::<f64>::default();
        for (n, f) in Flow::ALL.into_iter().enumerate() {
            v[f] = n as f64;
        }
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "[0.0,1.0,2.0,3.0,4.0,5.0,6.0,7.0]"
        );
        // A version 1 file: six flows, no battery.
        let back: PerFlow<Option<f64>> = serde_json::from_str("[1,null,2,3,null,-4]").unwrap();
        assert_eq!(back[Flow::Net], Some(-4.0));
        assert_eq!(back[Flow::Consumption], None);
        assert_eq!(back[Flow::BatteryDischarged], None);
        let back: PerFlow<f64> = serde_json::from_str("[1,0,2,3,0,-4,5,6]").unwrap();
        assert_eq!(
            (back[Flow::BatteryCharged], back[Flow::BatteryDischarged]),
            (5.0, 6.0)
        );
        for bad in ["[1,2,3]", "[1,2,3,4,5,6,7]", "[1,2,3,4,5,6,7,8,9]", "{}"] {
            assert!(serde_json::from_str::<PerFlow<f64>>(bad).is_err(), "{bad}");
        }
        let stems: Vec<&str> = Flow::ALL.iter().map(|f| f.stem()).collect();
        assert_eq!(
            stems,
            [
                "prod_eim",
                "conso_all_eim",
                "import_eim",
                "grid_eim",
                "eco_eim",
                "conso_net_eim",
                "battery_charged",
                "battery_discharged"
            ]
        );
    }
}
