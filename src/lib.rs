//! flowctl: send WhatsApp Flows and join every completion back to the recipient's phone
//! number through a per-recipient `flow_token` stored before the send.
//!
//! Data flows one way: `cli` → `config` (flags, environment and `.env`, resolved once into
//! each command's settings) → `commands` → (`outbound` | `store` | `server`); `outbound` (the
//! one send path and its retry policy) → `graph` (the only outbound HTTP) and `store` (the only
//! SQL); `server` (the only inbound HTTP) → `outbound`, `store`, `crypto`, `flow_json`,
//! `webhook_events`, `chatwoot_events`. The domain types (`Phone`, `FlowToken`, `Timestamp`)
//! and `secret` are shared by all, and `crypto` is pure functions.

pub mod answer_text;
pub mod atomic_file;
pub mod chatwoot_events;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod flow_json;
pub mod graph;
pub mod media;
pub mod optout;
pub mod outbound;
pub mod phone;
pub mod report;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod signals;
pub mod store;
pub mod time;
pub mod token;
pub mod webhook_events;
