//! `flowctl demo`: the whole loop offline in one command, on the real pieces — `sandbox`
//! playing the Graph API and the recipients, `serve` with a generated key, `bulk` over the
//! sample contacts — then the funnel, the first rows of the export and the HTML report.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::RngCore;

use super::exit;
use crate::cli::{DemoArgs, DemoInbox};
use crate::crypto::PrivateKey;

const SAMPLE_CONTACTS: &str = include_str!("../../contacts.sample.csv");
const SURVEY_FLOW: &str = include_str!("../../examples/survey_flow.json");

/// A child `flowctl` process, stopped when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_listening(mut cmd: Command, what: &str, log: &Path) -> anyhow::Result<Proc> {
    let errlog =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(errlog)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    match line.split("listening on ").nth(1) {
        Some(url) => Ok(Proc {
            child,
            url: url.trim().to_string(),
        }),
        None => {
            let _ = child.kill();
            bail!("{what} did not start; see {}", log.display())
        }
    }
}

fn hex_secret() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the tour and prints where everything is.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => tempfile::Builder::new()
            .prefix("flowctl-demo-")
            .tempdir()?
            .keep(),
    };
    let exe = std::env::current_exe().context("locating the flowctl binary")?;
    let db = dir.join("flowctl.db");
    let contacts = dir.join("contacts.csv");
    let flow = dir.join("survey_flow.json");
    let key_path = dir.join("private.pem");
    let pub_path = dir.join("public.pem");
    std::fs::write(&contacts, SAMPLE_CONTACTS)?;
    std::fs::write(&flow, SURVEY_FLOW)?;
    let (key, pem) = PrivateKey::generate()?;
    super::keygen::write_private_key(&key_path, pem.as_bytes())?;
    std::fs::write(&pub_path, key.public_key_pem())?;
    let app_secret = hex_secret();

    eprintln!("flowctl demo: working in {}", dir.display());
    let base = |c: &mut Command| {
        c.env("FLOWCTL_DB", &db)
            .env("APP_SECRET", &app_secret)
            .current_dir(&dir);
    };

    let chatwoot = args.inbox == Some(DemoInbox::Chatwoot);
    let chatwoot_secret = hex_secret();
    let mut serve = Command::new(&exe);
    base(&mut serve);
    if chatwoot {
        serve.env("CHATWOOT_WEBHOOK_SECRET", &chatwoot_secret);
    }
    serve
        .env("WEBHOOK_VERIFY_TOKEN", hex_secret())
        .args(["serve", "--listen", "127.0.0.1:0", "--flow-json"])
        .arg(&flow)
        .arg("--private-key-file")
        .arg(&key_path);
    let serve = spawn_listening(serve, "flowctl serve", &dir.join("serve.log"))?;
    eprintln!("  serve    {} (data endpoint and webhook)", serve.url);

    let mut sandbox = Command::new(&exe);
    base(&mut sandbox);
    sandbox.args(["sandbox", "--listen", "127.0.0.1:0", "--latency-ms", "30"]);
    if chatwoot {
        // Option B: Meta's webhook belongs to the inbox; the people's submissions reach
        // flowctl only as the inbox's forward.
        sandbox
            .args(["--complete-via", "chatwoot", "--chatwoot-webhook"])
            .arg(format!(
                "{}/api/chatwoot-webhook/{chatwoot_secret}",
                serve.url
            ));
    } else {
        sandbox
            .args(["--complete-via", "both", "--endpoint"])
            .arg(format!("{}/api/flow", serve.url))
            .arg("--webhook")
            .arg(format!("{}/api/message-webhook", serve.url))
            .arg("--public-key")
            .arg(&pub_path);
    }
    sandbox
        .arg("--flow-json")
        .arg(&flow)
        .arg("--record")
        .arg(dir.join("graph-requests.ndjson"));
    let sandbox = spawn_listening(sandbox, "flowctl sandbox", &dir.join("sandbox.log"))?;
    eprintln!(
        "  sandbox  {} (Graph API stand-in; its simulated people answer the survey)",
        sandbox.url
    );
    if chatwoot {
        eprintln!(
            "           playing a Chatwoot inbox that forwards each submission to\n           \
             {}/api/chatwoot-webhook/<secret> (delivery statuses stay in the inbox)",
            serve.url
        );
    }
    eprintln!();

    let status = Command::new(&exe)
        .env("FLOWCTL_DB", &db)
        .env("WHATSAPP_ACCESS_TOKEN", "demo-token")
        .env("PHONE_NUMBER_ID", "106540352242922")
        .env("FLOW_ID", "1234567890123456")
        .env("GRAPH_API_URL", &sandbox.url)
        .env("DEFAULT_COUNTRY", "MA")
        .env(
            "FLOW_BODY",
            "Bonjour {name}, votre avis compte : deux minutes pour notre enquête ?",
        )
        .env("FLOW_CTA", "Répondre")
        .current_dir(&dir)
        .args(["bulk", "--rate", "20", "--campaign", "demo"])
        .arg(&contacts)
        .stdout(Stdio::null())
        .status()
        .context("running flowctl bulk")?;
    eprintln!(
        "  (bulk exited {}; the invalid sample row is expected)\n",
        status.code().unwrap_or(-1)
    );

    wait_for_people(&sandbox.url).await?;
    // The webhook answers 200 first and stores asynchronously: give the inbox a moment.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Gathered, then written at once: a reader that went away (`demo | head`) ends the
    // printing, not the demo's clean-up.
    let mut text = String::from("== flowctl stats ==\n");
    let stats = Command::new(&exe)
        .env("FLOWCTL_DB", &db)
        .arg("stats")
        .output()?;
    text.push_str(&String::from_utf8_lossy(&stats.stdout));
    text.push_str("\n== flowctl export --csv (first rows) ==\n");
    let export = Command::new(&exe)
        .env("FLOWCTL_DB", &db)
        .args(["export", "--csv", "--flow-json"])
        .arg(&flow)
        .output()?;
    for line in String::from_utf8_lossy(&export.stdout).lines().take(6) {
        text.push_str(line);
        text.push('\n');
    }
    let report_path = dir.join("report.html");
    let report = Command::new(&exe)
        .env("FLOWCTL_DB", &db)
        .args(["report", "--flow-json"])
        .arg(&flow)
        .arg("--out")
        .arg(&report_path)
        .stdout(Stdio::null())
        .output()?;
    text.push_str(&format!(
        "\n== flowctl report ==\nReport: {} (open it in a browser: funnel, charts per question, responses)\n",
        report_path.display()
    ));
    text.push_str(&format!(
        "\nFiles: {dir}/flowctl.db (the store), export with `flowctl --db {dir}/flowctl.db export --csv`,\n\
         {dir}/graph-requests.ndjson (what the Graph API stand-in received), serve.log, sandbox.log.\n",
        dir = dir.display()
    ));
    super::print_or_closed(&text)?;
    drop(sandbox);
    drop(serve);
    Ok(
        if export.status.success() && stats.status.success() && report.status.success() {
            exit::OK
        } else {
            exit::FAILED
        },
    )
}

/// Waits until every simulated person has finished (or 30 s).
async fn wait_for_people(sandbox_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats: serde_json::Value = client
            .get(format!("{sandbox_url}/_sandbox/users"))
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        if n("started") > 0 && n("completed") + n("failed") >= n("started") {
            eprintln!(
                "  {} people answered the survey, {} could not\n",
                n("completed"),
                n("failed")
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the simulated people did not finish within 30 s: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
