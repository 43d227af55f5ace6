//! The system as a whole: on or off the grid, and the storage settings. Pure.

use super::device::DeviceKind;
use super::field::{Field, Measure, Subject, per_device};
use crate::envoy::api::ensemble::Inventory;
use crate::envoy::api::tariff::StorageSettings;

/// `grid_status`, where an IQ System Controller or IQ Meter Collar tells it.
pub fn grid(inventory: &Inventory) -> Vec<Field> {
    let word = |on: bool| if on { "on-grid" } else { "off-grid" };
    inventory
        .on_grid
        .and_then(|on| Field::state(Subject::System, Measure::GridStatus, word(on)))
        .into_iter()
        .collect()
}

/// `storage_mode` (a mode this program does not know is left out) and `charge_from_grid`.
pub fn storage(settings: &StorageSettings) -> Vec<Field> {
    let mode = Field::state(Subject::System, Measure::StorageMode, &settings.mode);
    let charge = settings.charge_from_grid.map(|on| {
        Field::new(
            Subject::System,
            Measure::ChargeFromGrid,
            f64::from(u8::from(on)),
        )
    });
    mode.into_iter().chain(charge).collect()
}

/// `generator_running`, where a generator is present.
pub fn generator(running: Option<bool>) -> Vec<Field> {
    let value = |on: bool| f64::from(u8::from(on));
    running
        .map(|on| Field::new(Subject::System, Measure::GeneratorRunning, value(on)))
        .into_iter()
        .collect()
}

/// Each dry-contact relay's `state`; returns the fields and the ids not safe in a topic.
pub fn relays(relays: &[(String, String)]) -> (Vec<Field>, Vec<String>) {
    per_device(
        DeviceKind::Relay,
        relays,
        |(id, _)| id,
        |key, (_, state)| {
            let field = Field::state(Subject::System, Measure::RelayState, state);
            field
                .map(|f| Field {
                    device: Some(key),
                    ..f
                })
                .into_iter()
                .collect()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(fields: &[Field]) -> Vec<(String, String)> {
        let text = |f: &Field| f.word().map_or_else(|| f.value.to_string(), str::to_string);
        fields.iter().map(|f| (f.name(), text(f))).collect()
    }

    #[test]
    fn grid_and_storage() {
        let on = |on_grid| Inventory {
            on_grid,
            ..Inventory::default()
        };
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            shown(&grid(&on(Some(true)))),
            [pair("grid_status", "on-grid")]
        );
        assert_eq!(
            shown(&grid(&on(Some(false)))),
            [pair("grid_status", "off-grid")]
        );
        assert!(grid(&on(None)).is_empty());
        let s = |mode: &str, charge| StorageSettings {
            mode: mode.into(),
            charge_from_grid: charge,
        };
        assert_eq!(
            shown(&storage(&s("economy", Some(true)))),
            [
                pair("storage_mode", "economy"),
                pair("charge_from_grid", "1")
            ]
        );
        assert_eq!(
            shown(&generator(Some(true))),
            [pair("generator_running", "1")]
        );
        assert!(generator(None).is_empty());
        let r = |id: &str, s: &str| (id.to_string(), s.to_string());
        let (fields, bad) = relays(&[r("NC1", "open"), r("NO2", "closed"), r("N/1", "open")]);
        assert_eq!(bad, ["N/1"]);
        assert_eq!(
            shown(&fields),
            [
                pair("relay/NC1/state", "open"),
                pair("relay/NO2/state", "closed")
            ]
        );
        assert_eq!(
            shown(&storage(&s("ai-optimisation", None))),
            Vec::<(String, String)>::new(),
            "an unknown mode is left out, not guessed"
        );
    }
}
