//! Values kept one per flow (the six lifetime counters the ledger follows): a plain array,
//! in the order of [`Flow::ALL`], indexed by the flow. Pure.

use std::ops::{Index, IndexMut};

use serde::{Deserialize, Serialize};

use crate::readings::Flow;

/// One value per [`Flow`], indexed by it. Kept as a plain array of six, in the order of
/// [`Flow::ALL`]: the format of the state file and of `P/S/ledger`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerFlow<T>(pub [T; 6]);

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
            "[0.0,1.0,2.0,3.0,4.0,5.0]"
        );
        let back: PerFlow<Option<f64>> = serde_json::from_str("[1,null,2,3,null,-4]").unwrap();
        assert_eq!(back[Flow::Net], Some(-4.0));
        assert_eq!(back[Flow::Consumption], None);
        let stems: Vec<&str> = Flow::ALL.iter().map(|f| f.stem()).collect();
        assert_eq!(
            stems,
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
