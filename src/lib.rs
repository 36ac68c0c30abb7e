//! flowctl: send WhatsApp Flows and join every completion back to the recipient's phone
//! number through a per-recipient `flow_token` stored before the send.
//!
//! Data flows one way: `cli` → `config` → `commands` → (`store` | `graph` | `server`), with
//! the domain types (`Phone`, `FlowToken`) shared by all and `crypto` as pure functions.

pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod flow_json;
pub mod graph;
pub mod outbound;
pub mod phone;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod time;
pub mod token;
