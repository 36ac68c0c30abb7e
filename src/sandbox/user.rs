//! The sandbox playing the people who receive the Flows: after accepting a Flow message it
//! posts signed `sent`/`delivered`/`read` statuses to the webhook, and completes the Flow
//! through the encrypted data endpoint (INIT, every screen with plausible answers, final
//! submit) and/or an `nfm_reply` on the webhook — the whole loop on one machine, no phone.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::notify::{self, Notifier, Status};
use crate::crypto::{self, PublicKey};
use crate::flow_json::FlowJson;

/// Which path the simulated person's answers take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompleteVia {
    /// The encrypted data endpoint only (as with an endpoint-powered Flow).
    Endpoint,
    /// The `nfm_reply` webhook only (as with a Flow without endpoint).
    Webhook,
    /// Both, as WhatsApp does for an endpoint-powered Flow: the endpoint answers SUCCESS, then
    /// the completion message reaches the webhook.
    Both,
}

/// How the simulated people behave.
#[derive(Clone)]
pub struct UserOptions {
    pub complete_via: CompleteVia,
    /// `…/api/flow` of the server under test.
    pub endpoint: Option<String>,
    /// The data endpoint's public key (to encrypt as the WhatsApp client does).
    pub public_key: Option<PublicKey>,
    /// The Flow the people fill in.
    pub flow: Option<Arc<FlowJson>>,
    /// How long a person waits after the message is accepted before acting.
    pub delay: Duration,
}

/// Counters of what the simulated people did (`GET /_sandbox/users`).
#[derive(Debug, Default)]
pub struct UserStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl UserStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        json!({
            "started": self.started.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "errors": errors,
        })
    }
}

/// The simulated people.
pub struct Users {
    opts: UserOptions,
    notifier: Arc<Notifier>,
    /// Where the files they attach are uploaded.
    cdn: Arc<super::media::Cdn>,
    pub stats: UserStats,
}

/// An accepted Flow message, as the recipient gets it.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub to: String,
    /// The recipient's WhatsApp id (may differ from `to`; see [`notify::wa_id_of`]).
    pub wa_id: String,
    pub flow_token: String,
    pub wamid: String,
    /// The message's `biz_opaque_callback_data`, echoed in its statuses as Meta does.
    pub callback: Option<String>,
}

impl Users {
    pub(crate) fn new(
        opts: UserOptions,
        notifier: Arc<Notifier>,
        cdn: Arc<super::media::Cdn>,
    ) -> Users {
        Users {
            opts,
            notifier,
            cdn,
            stats: UserStats::default(),
        }
    }

    /// Starts acting on a delivered message in the background.
    pub fn on_delivered(self: &Arc<Self>, msg: Delivered) {
        let users = Arc::clone(self);
        users.stats.started.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(users.opts.delay).await;
            match users.act(&msg).await {
                Ok(()) => {
                    users.stats.completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    users.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(to = %msg.to, error = %e, "simulated user failed");
                    if let Ok(mut errs) = users.stats.errors.lock() {
                        if errs.len() < 100 {
                            errs.push(format!("{}: {e}", msg.to));
                        }
                    }
                }
            }
        });
    }

    async fn act(&self, msg: &Delivered) -> Result<(), String> {
        let via = self.opts.complete_via;
        if self.notifier.has_webhook() {
            for status in ["sent", "delivered", "read"] {
                let event = notify::status_event(&Status {
                    wamid: &msg.wamid,
                    wa_id: &msg.wa_id,
                    status,
                    callback: msg.callback.as_deref(),
                    error: None,
                });
                self.notifier.post_webhook(&event).await?;
            }
        }
        let mut params = None;
        if matches!(via, CompleteVia::Endpoint | CompleteVia::Both) {
            params = Some(self.fill_through_endpoint(msg).await?);
        }
        if matches!(via, CompleteVia::Webhook | CompleteVia::Both) {
            let params = match params {
                Some(p) => p,
                None => {
                    let mut answers = self.all_answers(msg);
                    answers.insert("flow_token".into(), Value::String(msg.flow_token.clone()));
                    answers
                }
            };
            let response_json = Value::Object(params).to_string();
            let reply_id = format!("wamid.reply.{}", hash(&msg.wamid));
            let event = notify::completion_event(&msg.wamid, &msg.wa_id, &reply_id, &response_json);
            self.notifier.post_webhook(&event).await?;
        }
        Ok(())
    }

    /// INIT, then every screen with plausible answers until SUCCESS; returns the SUCCESS params.
    async fn fill_through_endpoint(&self, msg: &Delivered) -> Result<Map<String, Value>, String> {
        let mut reply = self
            .call_endpoint(
                json!({"version": "3.0", "action": "INIT", "flow_token": msg.flow_token}),
            )
            .await?;
        for _ in 0..32 {
            let screen = reply
                .get("screen")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if screen == "SUCCESS" {
                return reply
                    .pointer("/data/extension_message_response/params")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| "SUCCESS without params".to_string());
            }
            let answers = self.screen_answers(msg, &screen);
            reply = self
                .call_endpoint(
                    json!({"version": "3.0", "action": "data_exchange", "screen": screen,
                                      "data": answers, "flow_token": msg.flow_token}),
                )
                .await?;
        }
        Err("the Flow did not end after 32 screens".into())
    }

    async fn call_endpoint(&self, request: Value) -> Result<Value, String> {
        let (url, key) = match (&self.opts.endpoint, &self.opts.public_key) {
            (Some(u), Some(k)) => (u, k),
            _ => return Err("--complete-via endpoint needs --endpoint and the public key".into()),
        };
        let (envelope, rkey) = crypto::encrypt_request(key, request.to_string().as_bytes());
        let (status, text) = self
            .notifier
            .signed_post(url, envelope.to_json(), "data endpoint")
            .await?;
        if status != 200 {
            return Err(format!("data endpoint answered {status}"));
        }
        let plain = crypto::decrypt_response(&rkey, &text)
            .map_err(|e| format!("cannot decrypt the answer: {e}"))?;
        serde_json::from_slice(&plain).map_err(|e| format!("answer is not JSON: {e}"))
    }

    /// Plausible answers for one screen: an option of each choice field (varied per person),
    /// a comment for free text.
    fn screen_answers(&self, msg: &Delivered, screen_id: &str) -> Map<String, Value> {
        let mut out = Map::new();
        let Some(screen) = self.opts.flow.as_ref().and_then(|f| f.screen(screen_id)) else {
            out.insert("answer".into(), json!("oui"));
            return out;
        };
        for (key, bound) in &screen.submit_payload {
            let field = bound
                .as_str()
                .and_then(|b| b.strip_prefix("${form.").and_then(|r| r.strip_suffix('}')))
                .unwrap_or(key);
            if let Some(kind) = screen.pickers.get(field) {
                let file = self.cdn.upload(&msg.to, &msg.flow_token, field, kind);
                out.insert(key.clone(), json!([file]));
                continue;
            }
            let value = match screen.options.get(field) {
                Some(opts) if !opts.is_empty() => {
                    // Mostly the best ratings, some lower ones: varied but deterministic.
                    let h = hash(&(msg.flow_token.as_str(), field));
                    let idx = if h % 10 < 6 {
                        0
                    } else {
                        (h as usize / 10) % opts.len()
                    };
                    json!(opts[idx])
                }
                _ => json!(COMMENTS[(hash(&msg.flow_token) as usize) % COMMENTS.len()]),
            };
            out.insert(key.clone(), value);
        }
        out
    }

    fn all_answers(&self, msg: &Delivered) -> Map<String, Value> {
        let mut all = Map::new();
        if let Some(flow) = &self.opts.flow {
            for s in flow.screens() {
                all.extend(self.screen_answers(msg, &s.id));
            }
            // A completion message carries attached files as Graph media, not descriptors.
            for value in all.values_mut() {
                if let Value::Array(items) = value {
                    for item in items.iter_mut().filter(|i| i.get("cdn_url").is_some()) {
                        *item = self.cdn.webhook_shape(item);
                    }
                }
            }
        } else {
            all.insert("answer".into(), json!("oui"));
        }
        all
    }
}

const COMMENTS: &[&str] = &[
    "Très bien ⭐",
    "Accueil parfait, merci !",
    "RAS",
    "Un peu d'attente mais bon service",
];

fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
