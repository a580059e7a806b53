//! `sandbox`: the simulated external systems as one local process, for trying datasync without
//! real SaaS accounts (`./scripts/up.sh` starts it and points the connectors at it).
//!
//! `sandbox serve` listens on 127.0.0.1, ports `SANDBOX_PORT_BASE` (default 9100) + 1..8;
//! `sandbox env` prints the connector variables that point at those ports. Each HTTP system
//! lists what it received at `GET /_sandbox/requests`.

use sandbox::{SimServer, SmtpSink, System};

const SYSTEMS: [(System, u16, &str); 7] = [
    (System::Crm, 1, "CRM"),
    (System::Erp, 2, "ERP"),
    (System::Shop, 3, "SHOP"),
    (System::Pos, 4, "POS"),
    (System::Wms, 5, "WMS"),
    (System::Slack, 6, "SLACK"),
    (System::PagerDuty, 7, "PAGERDUTY"),
];
const SMTP_OFFSET: u16 = 8;

fn base() -> Result<u16, String> {
    match std::env::var("SANDBOX_PORT_BASE") {
        Err(_) => Ok(9100),
        Ok(v) => v.parse().map_err(|e| format!("SANDBOX_PORT_BASE: {e}")),
    }
}

/// The variables a connector needs to talk to the sandbox.
fn env_lines(base: u16) -> Vec<String> {
    let url = |offset: u16| format!("http://127.0.0.1:{}", base + offset);
    let mut lines = Vec::new();
    for (system, offset, _) in SYSTEMS {
        match system {
            System::Slack => {
                lines.push(format!("SLACK_WEBHOOK_URL={}{}", url(offset), system.credential()))
            }
            System::PagerDuty => {
                lines.push(format!("PAGERDUTY_EVENTS_URL={}", url(offset)));
                lines.push(format!("PAGERDUTY_ROUTING_KEY={}", system.credential()));
            }
            _ => {
                if let Some((url_var, secret_var)) = system.connector_vars() {
                    lines.push(format!("{url_var}={}", url(offset)));
                    lines.push(format!("{secret_var}={}", system.credential()));
                }
            }
        }
    }
    lines.push("SMTP_HOST=127.0.0.1".into());
    lines.push(format!("SMTP_PORT={}", base + SMTP_OFFSET));
    lines
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let base = match base() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match std::env::args().nth(1).as_deref() {
        Some("env") => {
            for line in env_lines(base) {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        None | Some("serve") => match serve(base).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sandbox: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("usage: sandbox [serve|env], got {other:?}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(base: u16) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for (system, offset, name) in SYSTEMS {
        let server = SimServer::start_on(system, base + offset)?;
        println!("{name:<10} {}", server.url());
        running.push(server);
    }
    let smtp = SmtpSink::start_on(base + SMTP_OFFSET).await?;
    println!("{:<10} smtp://127.0.0.1:{}", "SMTP", smtp.port);
    println!("requests each system received: GET <url>/_sandbox/requests");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
