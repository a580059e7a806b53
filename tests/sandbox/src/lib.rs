//! The sandbox: simulated external systems for tests and local demos. Each is a real HTTP (or
//! SMTP) server on 127.0.0.1 speaking the documented request format of the system it stands
//! for, checking its credentials, keeping the state a real system would (stock levels,
//! product availability, records), recording every request it received, and able to inject
//! faults (5xx, 429 with `Retry-After`) so retry paths can be tested.

mod http;
mod otlp;
mod smtp;

pub use http::{Fault, Recorded, SimServer, System};
pub use otlp::{Export, OtlpSink};
pub use smtp::{Mail, SmtpSink};

/// All simulated systems, started together.
pub struct Sandbox {
    pub crm: SimServer,
    pub erp: SimServer,
    pub shop: SimServer,
    pub pos: SimServer,
    pub wms: SimServer,
    pub slack: SimServer,
    pub pagerduty: SimServer,
    pub smtp: SmtpSink,
}

impl Sandbox {
    pub async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            crm: SimServer::start(System::Crm)?,
            erp: SimServer::start(System::Erp)?,
            shop: SimServer::start(System::Shop)?,
            pos: SimServer::start(System::Pos)?,
            wms: SimServer::start(System::Wms)?,
            slack: SimServer::start(System::Slack)?,
            pagerduty: SimServer::start(System::PagerDuty)?,
            smtp: SmtpSink::start().await?,
        })
    }
}
