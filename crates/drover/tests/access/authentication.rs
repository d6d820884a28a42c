//! Authentication errors: 401 with a challenge, whatever is wrong with the credentials.

use crate::common::{expect_error, TestServer};
use crate::helpers::{expect_unauthorized, token_of, whoami, APPS, TOKENS, WHOAMI};
use base64::Engine as _;
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

#[tokio::test]
async fn authentication_errors() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let alice_token = token_of(&alice);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let raw = |value: String| {
        t.http
            .get(t.url(WHOAMI))
            .header(AUTHORIZATION, value)
            .send()
    };

    // No credentials.
    let msg = expect_unauthorized(t.anonymous().get(WHOAMI).await, "no credentials").await;
    assert!(!msg.is_empty());
    expect_unauthorized(
        t.anonymous().get(APPS).await,
        "no credentials on the registry",
    )
    .await;
    expect_unauthorized(t.anonymous().get(TOKENS).await, "no credentials on tokens").await;

    // Wrong token, or a token of another user.
    let wrong = "drg_abcdef_abcdefghijabcdefghijabcdefghij1234";
    expect_unauthorized(t.client("alice", wrong).get(WHOAMI).await, "wrong token").await;
    expect_unauthorized(t.client("alice", "x").get(WHOAMI).await, "garbage token").await;
    expect_unauthorized(
        t.client("bob", &alice_token).get(WHOAMI).await,
        "alice's token as bob",
    )
    .await;
    expect_unauthorized(
        t.client("nobody", &alice_token).get(WHOAMI).await,
        "alice's token as unknown user",
    )
    .await;
    expect_unauthorized(
        t.client("alice", &token_of(&bob)).get(APPS).await,
        "bob's token as alice",
    )
    .await;

    // Malformed Basic credentials.
    let r = raw("Basic !!!not-base64!!!".into()).await.unwrap();
    expect_unauthorized(r, "Basic, not base64").await;
    let r = raw(format!("Basic {}", b64("no-colon-here")))
        .await
        .unwrap();
    expect_unauthorized(r, "Basic without colon").await;
    let r = raw(format!("Basic {}", b64(&format!(":{alice_token}"))))
        .await
        .unwrap();
    expect_unauthorized(r, "Basic without user").await;
    let r = raw(format!("Basic {}", b64("alice:"))).await.unwrap();
    expect_unauthorized(r, "Basic without token").await;
    let r = raw("Basic".into()).await.unwrap();
    expect_unauthorized(r, "Basic without anything").await;
    let r = raw("Digest username=\"alice\"".into()).await.unwrap();
    expect_unauthorized(r, "unsupported scheme").await;

    // Two credentials at once.
    let r = t
        .http
        .get(t.url(WHOAMI))
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("alice:{alice_token}"))),
        )
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("bob:{}", token_of(&bob)))),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = t
        .http
        .get(t.url(APPS))
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("alice:{alice_token}"))),
        )
        .header(AUTHORIZATION, "Bearer abc.def.ghi")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;

    // Bearer without single sign-on configured.
    let r = raw("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".into())
        .await
        .unwrap();
    let msg = expect_unauthorized(r, "Bearer without OIDC").await;
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("oidc") || lower.contains("single sign-on"),
        "message: {msg}"
    );
    let r = raw("Bearer ".into()).await.unwrap();
    expect_unauthorized(r, "empty Bearer").await;

    // The good credentials still work.
    assert_eq!(whoami(&alice).await["name"], "alice");
}
