use sandbox::{Fault, Sandbox};
use secrecy::SecretString;
use shared::{
    notify::{Incident, Mailer, PagerDuty, Slack, SmtpConfig, SmtpSecurity},
    outbound::Outcome,
    schemas::Email,
    schemas::sync::Severity,
};

fn smtp(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        credentials: None,
        from: "datasync <datasync@example.com>".parse().unwrap(),
    }
}

#[tokio::test]
async fn email_goes_out_over_real_smtp_with_text_and_html_parts() {
    let s = Sandbox::start().await.unwrap();
    let mailer = Mailer::new(&smtp(s.smtp.port)).unwrap();

    let outcome = mailer
        .send(&Email {
            to: vec!["purchasing@example.com".into()],
            subject: "Low Stock Alert: MUG-1".into(),
            text: "Product Mug is below reorder point.".into(),
            html: Some("<p>Product <b>Mug</b> is below reorder point.</p>".into()),
            message_id: None,
        })
        .await;

    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
    let mails = s.smtp.mails();
    assert_eq!(mails[0].to, ["purchasing@example.com"]);
    assert!(mails[0].data.contains("Subject: Low Stock Alert: MUG-1"));
    assert!(mails[0].data.contains("multipart/alternative"), "{}", mails[0].data);
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried_and_a_bad_address_is_not() {
    let mailer = Mailer::new(&smtp(harness::process::free_port())).unwrap();
    let email = |to: &str| Email {
        to: vec![to.into()],
        subject: "s".into(),
        text: "t".into(),
        html: None,
        message_id: None,
    };

    assert!(matches!(mailer.send(&email("ops@example.com")).await, Outcome::Retry { .. }));
    assert!(matches!(mailer.send(&email("not an address")).await, Outcome::Rejected { .. }));
}

#[tokio::test]
async fn slack_and_pagerduty_receive_their_documented_payloads() {
    let s = Sandbox::start().await.unwrap();
    let http = harness::test_client();
    let slack = Slack { webhook_url: SecretString::from(s.slack.url()) };
    let pd = PagerDuty {
        events_url: s.pagerduty.base_url().to_owned(),
        routing_key: SecretString::from(s.pagerduty.credential()),
    };
    s.pagerduty.fail_next(1, Fault::RateLimited { retry_after_secs: 2 });

    let posted = slack.post(&http, "⚠️ *Low Stock Alert*").await;
    let limited = pd
        .send(
            &http,
            "erp/unhealthy",
            Incident::Trigger {
                summary: "erp unhealthy",
                source: "sync-monitor",
                severity: Severity::Critical,
            },
        )
        .await;
    let triggered = pd
        .send(
            &http,
            "erp/unhealthy",
            Incident::Trigger {
                summary: "erp unhealthy",
                source: "sync-monitor",
                severity: Severity::Critical,
            },
        )
        .await;
    let resolved = pd.send(&http, "erp/unhealthy", Incident::Resolve).await;

    assert!(matches!(posted, Outcome::Delivered(_)), "{posted:?}");
    assert!(
        matches!(limited, Outcome::Retry { after: Some(d), .. } if d.as_secs() == 2),
        "{limited:?}"
    );
    assert!(matches!(triggered, Outcome::Delivered(_)), "{triggered:?}");
    assert!(matches!(resolved, Outcome::Delivered(_)), "{resolved:?}");
    assert_eq!(s.slack.accepted()[0].body["text"], "⚠️ *Low Stock Alert*");
    let actions: Vec<_> =
        s.pagerduty.accepted().iter().map(|r| r.body["event_action"].clone()).collect();
    assert_eq!(actions, ["trigger", "resolve"]);
}
