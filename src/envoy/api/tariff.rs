//! `/admin/lib/tariff`: the storage settings the owner chose in the Enphase app (mode,
//! charge from grid). Read as pyenphase reads them: `savings-mode` is an older word for
//! `economy`. Pure.

use serde::Deserialize;

use super::parse;

/// The batteries' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    /// `backup`, `self-consumption` or `economy`.
    pub mode: String,
    pub charge_from_grid: Option<bool>,
}

#[derive(Deserialize)]
struct AnswerJson {
    tariff: TariffJson,
}

#[derive(Deserialize)]
struct TariffJson {
    #[serde(default)]
    storage_settings: Option<SettingsJson>,
}

#[derive(Deserialize)]
struct SettingsJson {
    mode: String,
    #[serde(default)]
    charge_from_grid: Option<bool>,
}

/// `GET /admin/lib/tariff`; `None` where it holds no storage settings (no batteries).
pub fn storage_settings(body: &str) -> Result<Option<StorageSettings>, String> {
    let answer: AnswerJson = parse("/admin/lib/tariff", body)?;
    Ok(answer.tariff.storage_settings.map(|s| StorageSettings {
        mode: match s.mode.as_str() {
            "savings-mode" => "economy".to_string(),
            _ => s.mode,
        },
        charge_from_grid: s.charge_from_grid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_settings_of_the_captures_and_bad_answers() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/envoy");
        let read =
            |v: &str| std::fs::read_to_string(format!("{dir}/{v}/admin_lib_tariff")).unwrap();
        let settings = |mode: &str| StorageSettings {
            mode: mode.into(),
            charge_from_grid: Some(false),
        };
        let cases = [
            (
                "8.2.127_with_3cts_and_battery_split",
                Some(settings("self-consumption")),
            ),
            ("8.3.1598_collar", Some(settings("backup"))),
        ];
        for (variant, want) in cases {
            assert_eq!(storage_settings(&read(variant)), Ok(want), "{variant}");
        }
        let legacy =
            r#"{"tariff":{"storage_settings":{"mode":"savings-mode","charge_from_grid":true}}}"#;
        assert_eq!(
            storage_settings(legacy)
                .unwrap()
                .map(|s| (s.mode, s.charge_from_grid)),
            Some(("economy".into(), Some(true)))
        );
        assert_eq!(storage_settings(r#"{"tariff":{}}"#), Ok(None));
        for bad in [
            "",
            "[]",
            "<html>",
            r#"{"tariff":{"storage_settings":{"mode":1}}}"#,
        ] {
            assert!(storage_settings(bad).is_err(), "{bad}");
        }
    }
}
