//! The sandbox: simulated external systems for tests and local demos. Each is a real HTTP (or
//! SMTP) server on 127.0.0.1 speaking the documented request format of the system it stands
//! for, checking its credentials, keeping the state a real system would (stock levels,
//! product availability, records), recording every request it received, and able to inject
//! faults (5xx, 429 with `Retry-After`) so retry paths can be tested.

mod alerting;
mod crm;
mod erp;
mod http;
mod otlp;
mod smtp;

pub use alerting::Incident;
pub use crm::{CrmObject, WebhookSigner, deliver};
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

    /// The variables that point a connector service at the simulated CRM, ERP, shop, POS and
    /// WMS (base URL and credential of each).
    pub fn connector_env(&self) -> Vec<(String, String)> {
        [&self.crm, &self.erp, &self.shop, &self.pos, &self.wms]
            .into_iter()
            .filter_map(|sim| {
                let (url, secret) = sim.system().connector_vars()?;
                Some([
                    (url.to_owned(), sim.base_url().to_owned()),
                    (secret.to_owned(), sim.credential().to_owned()),
                ])
            })
            .flatten()
            .collect()
    }
}
