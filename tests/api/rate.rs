//! Rate limits: brute force and floods are slowed with `RATE_LIMITED` and a retry
//! delay, people and ordinary clients are not, on every backend.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::*;

async fn limited_app(backend: Backend, trusted_proxy: bool) -> TestApp {
    spawn_app_on(TestDatabase::new(backend).await, |c| {
        c.rate_limits = parley::config::Switch::On;
        if trusted_proxy {
            c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        }
    })
    .await
}

/// Posts an operation from `ip` (through the trusted local proxy); the response and
/// its `Retry-After` header.
async fn from(
    app: &TestApp,
    ip: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (Value, Option<String>) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-forwarded-for", ip)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.json().await.expect("json"), retry)
}

const LOGIN: &str = "mutation($u: String!, $p: String!) { login(input: { username: $u, password: $p }) { accessToken } }";

fn rate_limited(response: &Value) -> bool {
    let limited = error_code(response) == Some("RATE_LIMITED");
    if limited {
        assert!(
            response["errors"][0]["extensions"]["retryAfter"]
                .as_u64()
                .is_some_and(|s| s >= 1),
            "{response}"
        );
    }
    limited
}

#[tokio::test]
async fn a_burst_of_messages_passes_and_a_flood_is_slowed() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = limited_app(backend, false).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let send = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }";
        for n in 0..20 {
            let response = gql(
                &app,
                &alice,
                send,
                json!({ "i": { "conversationId": group, "body": format!("m{n}") } }),
            )
            .await;
            ok(&response);
        }
        let mut refused = None;
        for n in 20..200 {
            let (response, retry) = from(
                &app,
                "ignored",
                Some(&alice.token),
                send,
                json!({ "i": { "conversationId": group, "body": format!("m{n}") } }),
            )
            .await;
            if rate_limited(&response) {
                refused = Some((response, retry));
                break;
            }
        }
        let (response, retry) = refused.expect("a flood of messages is limited");
        let seconds = response["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .expect("retryAfter");
        assert_eq!(
            retry,
            Some(seconds.to_string()),
            "the HTTP response says when too"
        );
        // Reading is not limited.
        ok(&gql(&app, &alice, "{ me { id } }", json!({})).await);
    }
}

#[tokio::test]
async fn failed_logins_slow_the_account_and_the_address_but_no_one_else() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = limited_app(backend, true).await;
        let victim = app.register("victim", "correct horse battery").await;
        let refresh = text(&victim, "/data/register/refreshToken").to_owned();
        app.register("bystander", "correct horse battery").await;

        // Per account: ten wrong guesses, then even the right password waits.
        let attacker = "198.51.100.1";
        let mut guesses = 0;
        loop {
            let (response, _) = from(
                &app,
                attacker,
                None,
                LOGIN,
                json!({ "u": "victim", "p": format!("guess number {guesses}") }),
            )
            .await;
            if rate_limited(&response) {
                break;
            }
            assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
            guesses += 1;
            assert!(guesses <= 11, "the account was never limited");
        }
        let page = crate::metrics::scrape(&app).await;
        assert!(
            crate::metrics::value(&page, "parley_rate_limited_total", &[("limit", "login")])
                .is_some_and(|refused| refused >= 1.0),
            "{page}"
        );
        assert!(
            guesses >= 10,
            "a person mistyping a few times is not limited: {guesses}"
        );
        let (response, _) = from(
            &app,
            "203.0.113.50",
            None,
            LOGIN,
            json!({ "u": "Victim", "p": "correct horse battery" }),
        )
        .await;
        assert!(rate_limited(&response), "{response}");
        // Others sign in, and the victim's open session refreshes, meanwhile.
        let (response, _) = from(
            &app,
            attacker,
            None,
            LOGIN,
            json!({ "u": "bystander", "p": "correct horse battery" }),
        )
        .await;
        ok(&response);
        ok(&app.refresh(&refresh).await);

        // Per address: many accounts guessed from one address.
        let spray = "198.51.100.2";
        let mut failures = 0;
        loop {
            let (response, _) = from(
                &app,
                spray,
                None,
                LOGIN,
                json!({ "u": format!("nobody{failures}"), "p": "correct horse battery" }),
            )
            .await;
            if rate_limited(&response) {
                break;
            }
            failures += 1;
            assert!(failures <= 51, "the address was never limited");
        }
        assert!(failures >= 50);
        let (response, _) = from(
            &app,
            spray,
            None,
            LOGIN,
            json!({ "u": "bystander", "p": "correct horse battery" }),
        )
        .await;
        assert!(rate_limited(&response), "{response}");
        let (response, _) = from(
            &app,
            "198.51.100.3",
            None,
            LOGIN,
            json!({ "u": "bystander", "p": "correct horse battery" }),
        )
        .await;
        ok(&response);
    }
}

#[tokio::test]
async fn registrations_and_socket_opens_are_limited_per_address() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = limited_app(backend, true).await;
        let register = "mutation($u: String!) { register(input: { username: $u, password: \"correct horse battery\", displayName: \"x\" }) { accessToken } }";
        let mut made = 0;
        loop {
            let (response, _) = from(
                &app,
                "192.0.2.1",
                None,
                register,
                json!({ "u": format!("user{made}") }),
            )
            .await;
            if rate_limited(&response) {
                break;
            }
            ok(&response);
            made += 1;
            assert!(made <= 10, "registrations were never limited");
        }
        assert_eq!(made, 10);
        let (response, _) =
            from(&app, "192.0.2.2", None, register, json!({ "u": "someone" })).await;
        ok(&response);

        // Socket opens: a burst, then 429 with Retry-After before any upgrade.
        let url = app.address.replace("http://", "ws://") + "/graphql";
        let mut sockets = Vec::new();
        let refusal = loop {
            let mut request = url.clone().into_client_request().expect("request");
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "graphql-transport-ws".parse().expect("header"),
            );
            request
                .headers_mut()
                .insert("x-forwarded-for", "192.0.2.9".parse().expect("header"));
            match tokio_tungstenite::connect_async(request).await {
                Ok((socket, _)) => sockets.push(socket),
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => break response,
                Err(other) => panic!("unexpected {other}"),
            }
            assert!(sockets.len() <= 30, "socket opens were never limited");
        };
        assert_eq!(sockets.len(), 30);
        assert_eq!(refusal.status().as_u16(), 429);
        assert!(refusal.headers().get("retry-after").is_some());
    }
}

#[tokio::test]
async fn turning_limits_off_lets_everything_through() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        // The test configuration turns limits off, as PARLEY_RATE_LIMITS=off does.
        let app = spawn_app(backend).await;
        assert_eq!(app.state.config.rate_limits, parley::config::Switch::Off);
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        for n in 0..60 {
            post_ok(&app, &alice, &group, &format!("m{n}")).await;
        }
        for n in 0..15 {
            let response = app.login("alice", &format!("wrong password {n}")).await;
            assert_eq!(error_code(&response), Some("UNAUTHENTICATED"));
        }
        assert_eq!(
            app.state.rate.keys(),
            0,
            "no limiter keeps anything when off"
        );
    }
}
