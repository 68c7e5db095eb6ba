//! `GET /metrics`: Prometheus text with the documented series, moving as the server
//! works. Each test runs in a process of its own (nextest), but the recorder is global
//! to the process, so figures are compared as "at least".

use std::time::Duration;

use futures::SinkExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::backends;
use crate::helpers::*;
use crate::ws::{connect, next_json, start};

/// The page, checking it is Prometheus text.
pub async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.expect("text")
}

/// The value of the series `name{labels}` (labels as rendered, in any order), if any.
pub fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")));
            all.then(|| number.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn metrics_count_events_operations_projectors_and_sockets() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        post_ok(&app, &alice, &group, "hello").await;
        // A query that fails validation, and one that runs into an error.
        app.graphql("{ noSuchField }", json!({}), Some(&alice.token))
            .await;
        let refused = gql(
            &app,
            &alice,
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
            json!({ "i": { "conversationId": "00000000-0000-7000-8000-000000000000", "body": "x" } }),
        )
        .await;
        assert!(!refused["errors"].is_null(), "{refused}");

        let mut socket = connect(&app, &alice.token).await;
        start(
            &mut socket,
            "1",
            "subscription($c: ID!) { conversationEvents(conversationId: $c) { __typename } }",
            json!({ "c": group }),
        )
        .await;
        // The subscription is admitted before the server reads anything else from
        // this socket; a ping round trip proves the server has read it.
        socket
            .send(Message::Text(json!({ "type": "ping" }).to_string().into()))
            .await
            .expect("ping");
        assert_eq!(next_json(&mut socket).await["type"], "pong");

        let page = scrape(&app).await;
        for name in [
            "parley_events_appended_total",
            "parley_graphql_operations_total",
            "parley_graphql_operation_duration_seconds",
            "parley_projector_position",
            "parley_websocket_connections",
        ] {
            assert!(
                page.contains(&format!("# HELP {name}"))
                    || page.contains(&format!("# TYPE {name}")),
                "{name} is not described:\n{page}"
            );
        }
        let at_least = |name: &str, labels: &[(&str, &str)], floor: f64| {
            let found = value(&page, name, labels);
            assert!(
                found.is_some_and(|v| v >= floor),
                "{name}{labels:?} = {found:?}, expected at least {floor}:\n{page}"
            );
        };
        at_least(
            "parley_events_appended_total",
            &[("event_type", "MessagePosted")],
            1.0,
        );
        at_least(
            "parley_graphql_operations_total",
            &[
                ("operation", "sendMessage"),
                ("kind", "mutation"),
                ("outcome", "ok"),
            ],
            1.0,
        );
        at_least(
            "parley_graphql_operations_total",
            &[
                ("operation", "sendMessage"),
                ("kind", "mutation"),
                ("outcome", "error"),
            ],
            1.0,
        );
        at_least(
            "parley_graphql_operations_total",
            &[("outcome", "invalid")],
            1.0,
        );
        at_least(
            "parley_graphql_operation_duration_seconds_count",
            &[("operation", "sendMessage")],
            1.0,
        );
        at_least(
            "parley_graphql_operation_duration_seconds_bucket",
            &[("operation", "sendMessage"), ("le", "+Inf")],
            1.0,
        );
        // Client-chosen names never become labels.
        assert!(!page.contains("noSuchField"), "{page}");
        at_least(
            "parley_projector_position",
            &[("projector", "messages")],
            1.0,
        );
        at_least(
            "parley_projector_state",
            &[("projector", "users"), ("state", "live")],
            1.0,
        );
        assert!(value(
            &page,
            "parley_projector_lag_events",
            &[("projector", "users")]
        )
        .is_some());
        at_least("parley_websocket_connections", &[], 1.0);
        at_least("parley_subscriptions", &[], 1.0);
        assert!(value(&page, "parley_consistency_wait_timeouts_total", &[]).is_some());

        // Closing the socket gives its connection and subscription back.
        let before = value(&page, "parley_subscriptions", &[]).unwrap_or_default();
        socket.close(None).await.expect("close");
        drop(socket);
        let mut tries = 0;
        loop {
            let page = scrape(&app).await;
            if value(&page, "parley_subscriptions", &[]).is_some_and(|now| now < before) {
                break;
            }
            tries += 1;
            assert!(
                tries < 100,
                "the closed socket's subscription still counts:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}
