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
use crate::flow_json::{form_ref, FlowJson, Screen, NEXT_SCREEN};

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
    /// The completion message reaches a Chatwoot inbox, which forwards it as its own
    /// `message_created` webhook (see [`super::chatwoot`]).
    Chatwoot,
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
    /// How the people behave beyond filling in the screens.
    pub habits: Habits,
}

/// What the simulated people do besides answering every screen, as real clients and people
/// do; each percentage picks the same people every run (it hashes the phone number).
#[derive(Clone, Debug, Default)]
pub struct Habits {
    /// Percent of the people who leave a required answer out of their first submit, then
    /// fix it when the endpoint re-shows the screen with an `error_message`.
    pub forget_required_pct: u8,
    /// Percent of the people whose client lost the `SUCCESS` answer and sends the final
    /// submit once more; the second answer must be the same `SUCCESS`.
    pub retry_final_submit_pct: u8,
    /// Send data API 4.0 requests carrying a `flow_token_signature` signed with the app
    /// secret (`--data-api 4.0`).
    pub data_api_4: bool,
    /// Percent of the people who reply "STOP" (a text message on the webhook) instead of
    /// filling in the Flow (`--stop`).
    pub stop_pct: u8,
}

/// Counters of what the simulated people did (`GET /_sandbox/users`).
#[derive(Debug, Default)]
pub struct UserStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// Same-screen refreshes asked by a selection (`on-select-action`).
    pub refreshes: AtomicU64,
    /// Submits fixed after the endpoint re-showed the screen with an `error_message`.
    pub corrections: AtomicU64,
    /// Final submits sent again and answered with the same `SUCCESS`.
    pub retried_final_submits: AtomicU64,
    /// People who replied "STOP" instead of answering.
    pub stopped: AtomicU64,
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
            "refreshes": self.refreshes.load(Ordering::Relaxed),
            "corrections": self.corrections.load(Ordering::Relaxed),
            "retried_final_submits": self.retried_final_submits.load(Ordering::Relaxed),
            "stopped": self.stopped.load(Ordering::Relaxed),
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
                // Someone who replied STOP did not complete the Flow.
                Ok(()) if users.stops(&msg) => {}
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

    /// Whether this person replies "STOP" instead of answering (`--stop PCT`; the reply
    /// needs a webhook to go to).
    fn stops(&self, msg: &Delivered) -> bool {
        self.notifier.has_webhook() && chosen(&msg.to, "stop", self.opts.habits.stop_pct)
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
        if self.stops(msg) {
            // An opt-out: the person writes back instead of opening the Flow.
            let id = format!("wamid.stop.{}", hash(&msg.wamid));
            let event = notify::text_event(&msg.wa_id, "STOP", &id);
            self.notifier.post_webhook(&event).await?;
            self.stats.stopped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if via == CompleteVia::Chatwoot {
            let mut answers = self.all_answers(msg);
            answers.insert("flow_token".into(), Value::String(msg.flow_token.clone()));
            let target = self
                .notifier
                .chatwoot()
                .ok_or("--complete-via chatwoot needs --chatwoot-webhook URL")?;
            let http = self.notifier.http();
            return super::chatwoot::forward_submission(
                http, target, &msg.wa_id, &msg.wamid, answers,
            )
            .await;
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

    /// INIT, then every screen until SUCCESS, as the WhatsApp client does: a selection with
    /// an `on-select-action` asks for the same screen again and its refreshed options are used;
    /// a screen re-shown with an `error_message` is fixed and submitted again; the next screen
    /// is whatever the endpoint answers (branches included). Returns the SUCCESS params.
    async fn fill_through_endpoint(&self, msg: &Delivered) -> Result<Map<String, Value>, String> {
        let habits = &self.opts.habits;
        let mut forget = chosen(&msg.to, "forget", habits.forget_required_pct);
        let mut reply = self.exchange(msg, "INIT", None, Map::new()).await?;
        let mut last_submit: Option<(String, Map<String, Value>)> = None;
        for _ in 0..64 {
            let screen = reply
                .get("screen")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut shown = reply
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if screen == "SUCCESS" {
                let params = reply
                    .pointer("/data/extension_message_response/params")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| "SUCCESS without params".to_string())?;
                if let Some((screen, answers)) =
                    last_submit.filter(|_| chosen(&msg.to, "retry", habits.retry_final_submit_pct))
                {
                    self.retry_final_submit(msg, &screen, answers, &reply)
                        .await?;
                }
                return Ok(params);
            }
            if let Some(error) = shown.get("error_message").and_then(Value::as_str) {
                // Re-shown with an error: the person fixes the answer they left out, once.
                let refused = last_submit.as_ref().is_some_and(|(s, _)| *s == screen);
                if !refused || !forget {
                    return Err(format!(
                        "the endpoint refused the answers of {screen}: {error}"
                    ));
                }
                forget = false;
                self.stats.corrections.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(flow) = &self.opts.flow {
                if let Some(s) = flow.screen(&screen) {
                    for refresh in &s.refreshes {
                        let payload = self.resolve(msg, s, &shown, &refresh.payload, false);
                        let again = self
                            .exchange(msg, "data_exchange", Some(&screen), payload)
                            .await?;
                        if again.get("screen").and_then(Value::as_str) != Some(screen.as_str()) {
                            return Err(format!("a refresh of {screen} answered another screen"));
                        }
                        if let Some(d) = again.get("data").and_then(Value::as_object) {
                            shown.extend(d.clone());
                        }
                        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let answers = self.screen_answers(msg, &screen, &shown, forget);
            last_submit = Some((screen.clone(), answers.clone()));
            reply = self
                .exchange(msg, "data_exchange", Some(&screen), answers)
                .await?;
        }
        Err("the Flow did not end after 64 exchanges".into())
    }

    /// The client lost the `SUCCESS` answer and submits the last screen again: the endpoint
    /// must answer the same `SUCCESS` (a 427 would tell the person the form failed).
    async fn retry_final_submit(
        &self,
        msg: &Delivered,
        screen: &str,
        answers: Map<String, Value>,
        first: &Value,
    ) -> Result<(), String> {
        let again = self
            .exchange(msg, "data_exchange", Some(screen), answers)
            .await
            .map_err(|e| format!("the repeated final submit failed: {e}"))?;
        if &again != first {
            return Err(format!(
                "the repeated final submit got another answer: {again} (first: {first})"
            ));
        }
        self.stats
            .retried_final_submits
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One request to the data endpoint, in the data API version the people speak.
    async fn exchange(
        &self,
        msg: &Delivered,
        action: &str,
        screen: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<Value, String> {
        let mut request = json!({"version": "3.0", "action": action, "flow_token": msg.flow_token});
        if let Some(screen) = screen {
            request["screen"] = json!(screen);
        }
        if action != "INIT" || !data.is_empty() {
            request["data"] = Value::Object(data);
        }
        if self.opts.habits.data_api_4 {
            let secret = self
                .notifier
                .app_secret()
                .ok_or("--data-api 4.0 needs APP_SECRET to sign the flow token")?;
            request["version"] = json!("4.0");
            request["flow_token_signature"] = json!(crypto::jwt::sign_flow_token(
                secret.as_bytes(),
                &msg.flow_token
            ));
        }
        self.call_endpoint(request).await
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

    /// Plausible answers for one screen's submit, given the data the screen is shown with:
    /// an option of each choice (varied per person, from the list the endpoint sent when the
    /// choice has a `${data.…}` source), a comment for free text. With `forget`, the first
    /// required answer is left out.
    fn screen_answers(
        &self,
        msg: &Delivered,
        screen_id: &str,
        shown: &Map<String, Value>,
        forget: bool,
    ) -> Map<String, Value> {
        let Some(screen) = self.opts.flow.as_ref().and_then(|f| f.screen(screen_id)) else {
            let mut out = Map::new();
            out.insert("answer".into(), json!("oui"));
            return out;
        };
        self.resolve(msg, screen, shown, &screen.submit_payload, forget)
    }

    /// The values of a payload: `${form.x}` → the person's answer to `x` (for
    /// a picker, a file uploaded to the CDN; left out for the first required answer with `forget`), `${data.x}` → the
    /// screen's data, anything else as written.
    fn resolve(
        &self,
        msg: &Delivered,
        screen: &Screen,
        shown: &Map<String, Value>,
        payload: &Map<String, Value>,
        forget: bool,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        let mut forgotten = !forget;
        for (key, bound) in payload {
            let Some(text) = bound.as_str() else {
                out.insert(key.clone(), bound.clone());
                continue;
            };
            if let Some(field) = form_ref(text) {
                if !forgotten && screen.required.iter().any(|r| r == field) {
                    forgotten = true;
                    continue;
                }
                if let Some(v) = self.field_answer(msg, screen, shown, key, field) {
                    out.insert(key.clone(), v);
                }
            } else if let Some(v) = text
                .strip_prefix("${data.")
                .and_then(|r| r.strip_suffix('}'))
                .and_then(|k| shown.get(k))
            {
                out.insert(key.clone(), v.clone());
            } else {
                out.insert(key.clone(), bound.clone());
            }
        }
        out
    }

    /// The person's answer to one component (`None`: left empty).
    fn field_answer(
        &self,
        msg: &Delivered,
        screen: &Screen,
        shown: &Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Option<Value> {
        if let Some(kind) = screen.pickers.get(field) {
            // An attached file: uploaded to the sandbox's CDN, answered as the descriptor the
            // WhatsApp client sends.
            let file = self.cdn.upload(&msg.to, &msg.flow_token, field, kind);
            return Some(json!([file]));
        }
        let kind = screen.kinds.get(field).map(String::as_str).unwrap_or("");
        if kind == "OptIn" {
            return Some(json!(true));
        }
        let from_endpoint: Option<Vec<String>> = screen
            .sources
            .get(field)
            .and_then(|k| shown.get(k))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            });
        let opts = from_endpoint.or_else(|| screen.options.get(field).cloned());
        match opts {
            Some(opts) if !opts.is_empty() => {
                let idx = if key == NEXT_SCREEN {
                    // A branch: the same for a phone number every run, so tests know who
                    // takes which path.
                    (hash(&(msg.to.as_str(), field)) as usize) % opts.len()
                } else {
                    // Mostly the best ratings, some lower ones: varied but deterministic.
                    let h = hash(&(msg.flow_token.as_str(), field));
                    if h % 10 < 6 {
                        0
                    } else {
                        (h as usize / 10) % opts.len()
                    }
                };
                Some(json!(opts[idx]))
            }
            _ => Some(json!(
                COMMENTS[(hash(&msg.flow_token) as usize) % COMMENTS.len()]
            )),
        }
    }

    fn all_answers(&self, msg: &Delivered) -> Map<String, Value> {
        let mut all = Map::new();
        if let Some(flow) = &self.opts.flow {
            for s in flow.screens() {
                all.extend(self.screen_answers(msg, &s.id, &Map::new(), false));
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

/// Whether the person with phone `to` has the habit `what` that `pct` percent of the people
/// have (the same people every run).
fn chosen(to: &str, what: &str, pct: u8) -> bool {
    pct > 0 && hash(&(to, what)) % 100 < u64::from(pct)
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
