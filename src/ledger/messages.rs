//! The ledger's messages: today's, yesterday's and the midnight values under `data/`, the
//! energy tree, each flow's half-hour `detailed`, and `P/S/ledger`. Pure.

use std::time::SystemTime;

use super::book::Ledger;
use crate::mqtt::Message;
use crate::readings::{Measure, Part};
use crate::time::zone::{self, Zone};
use crate::topics::Composer;
use crate::topics::payload::{self, Dated};

/// The ledger's retained messages: `data/{sensor}_whLifetime_00h`, `_today` and
/// `_yesterday` (Wh), the energy tree (kWh; `max_power` in W), each flow's
/// `detailed` (always JSON), and `P/S/ledger`, the state that restores the ledger when
/// the state file is lost.
pub fn messages(
    p: &Composer,
    ledger: &Ledger,
    zone: &Zone,
    split: bool,
    now: SystemTime,
) -> Vec<Message> {
    let stamp = zone::utc_time(now);
    let today = ledger.today.date.to_string();
    let yesterday = ledger.yesterday.as_ref().map(|y| y.date.to_string());
    let mut out = Vec::new();
    for f in ledger.daily_fields() {
        let date = if f.measure == Measure::Yesterday {
            yesterday.as_deref()
        } else {
            Some(today.as_str())
        };
        let dated = Dated { date, split: None };
        let value = payload::number(f.value);
        out.push(p.message(
            p.topic("data", &f.name()),
            value,
            f.unit(),
            &stamp,
            p.retain,
            dated,
        ));
    }
    let totals = ledger.totals(split);
    for f in &totals {
        let part = |part| {
            let measure = Measure::Daily(Some(part));
            (f.measure == Measure::Daily(None))
                .then(|| totals.iter().find(|t| t.is(f.of, measure)))
                .flatten()
                .map(|t| t.value)
        };
        let dated = Dated {
            date: Some(&today),
            split: part(Part::OffPeak).zip(part(Part::Peak)),
        };
        let value = payload::number(f.value);
        out.push(p.message(
            p.topic("", &f.name()),
            value,
            f.unit(),
            &stamp,
            p.retain,
            dated,
        ));
    }
    for (flow, slots) in ledger.detailed(zone) {
        out.push(Message {
            topic: p.topic(flow.tree().unwrap_or_default(), "detailed"),
            payload: payload::detailed(&today, &p.serial, &slots),
            retain: p.retain,
            live: false,
        });
    }
    out.push(Message {
        topic: p.topic("", "ledger"),
        payload: super::book::text(ledger),
        retain: true,
        live: false,
    });
    out
}
