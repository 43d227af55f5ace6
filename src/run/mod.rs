//! The settings as the program starts them ([`app`]: in a Home Assistant App, its options
//! and the Supervisor's broker first). The runs: the service ([`service`]: the loop, its feed table in [`schedule`]), `--once`
//! ([`once`]), the poll → publish cycle both share ([`cycle`]), the feeds that poll the
//! Envoy ([`feeds`]) and the side feeds' back-off ([`side`]), the broker as they open it
//! ([`broker`]), log lines the LAN can repeat at will counted ([`repeats`]), and the reports
//! `--check` ([`check`]) and `--diagnose` ([`diagnose`]).

pub mod app;
pub mod broker;
pub mod check;
pub mod cycle;
pub mod diagnose;
pub mod feeds;
pub mod once;
pub mod repeats;
pub mod schedule;
pub mod service;
pub mod side;
