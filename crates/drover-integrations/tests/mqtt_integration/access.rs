//! Who may connect and subscribe to what; what is refused, and how.

use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::QoS as Q4;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_at_connect() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let other = env.user("bob").await;

    let (_, ack) = V4::connect(env.v4("c", "alice", &other)).await;
    match ack {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (_, ack) = V5::connect(env.v5("c", "alice", "drg_nope")).await;
    match ack {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, p5::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (_, ack) = V5::connect(env.v5("c", "nobody", &token)).await;
    assert!(
        matches!(
            ack,
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(
                p5::ConnectReturnCode::BadUserNamePassword
            ))
        ),
        "{ack:?}"
    );
    // Without credentials.
    let opts = rumqttc::v5::MqttOptions::new("c", "127.0.0.1", env.addr.port());
    let (_, ack) = V5::connect(opts).await;
    assert!(
        matches!(
            ack,
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(
                p5::ConnectReturnCode::BadUserNamePassword
            ))
        ),
        "{ack:?}"
    );
    // The right token works, and the CONNACK says wildcards are not available.
    let (_, ack) = V5::ok(env.v5("c", "alice", &token)).await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.wildcard_subscription_available, Some(0));
    assert_ne!(props.shared_subscription_available, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscriptions_v5() {
    let env = Env::default().await;
    let alice = env.user("alice").await;
    env.user("carol").await;
    env.app("alice", "app1").await;
    env.app("carol", "carols-app").await;
    let (mut c, _) = V5::ok(env.v5("refusals", "alice", &alice)).await;
    let cases = [
        (
            "app/+",
            p5::SubscribeReasonCode::WildcardSubscriptionsNotSupported,
        ),
        (
            "#",
            p5::SubscribeReasonCode::WildcardSubscriptionsNotSupported,
        ),
        (
            "app/app1/#",
            p5::SubscribeReasonCode::WildcardSubscriptionsNotSupported,
        ),
        ("command/x", p5::SubscribeReasonCode::TopicFilterInvalid),
        (
            "command/app1/dev1/reboot",
            p5::SubscribeReasonCode::TopicFilterInvalid,
        ),
        ("telemetry", p5::SubscribeReasonCode::TopicFilterInvalid),
        ("app/app1/", p5::SubscribeReasonCode::TopicFilterInvalid),
        // Unreadable and nonexistent applications: exactly the same answer.
        ("app/carols-app", p5::SubscribeReasonCode::NotAuthorized),
        ("app/no-such-app", p5::SubscribeReasonCode::NotAuthorized),
        (
            "$share/g/app/carols-app",
            p5::SubscribeReasonCode::NotAuthorized,
        ),
        (
            "$share/g/app/no-such-app",
            p5::SubscribeReasonCode::NotAuthorized,
        ),
        (
            "app/app1",
            p5::SubscribeReasonCode::Success(Q5::AtLeastOnce),
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            c.subscribe(filter, Q5::AtLeastOnce).await,
            vec![expected],
            "SUBACK for {filter}"
        );
    }
    // QoS 2 is granted as 1.
    assert_eq!(
        c.subscribe("a/app1", Q5::ExactlyOnce).await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    // An unknown content mode.
    assert_eq!(
        c.subscribe_with(
            "application/app1",
            Q5::AtLeastOnce,
            &[("content-mode", "binray")]
        )
        .await,
        vec![p5::SubscribeReasonCode::ImplementationSpecific]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_may_subscribe_and_strangers_see_nothing_v3() {
    let env = Env::default().await;
    env.user("alice").await;
    let bob = env.user("bob").await;
    let carol = env.user("carol").await;
    let app = env.app("alice", "app1").await;
    env.add_reader("alice", "app1", "bob").await;

    let (mut b, _) = V4::ok(env.v4("reader", "bob", &bob)).await;
    assert_eq!(
        b.subscribe("app/app1", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q4::AtLeastOnce)]
    );
    let (mut c, _) = V4::ok(env.v4("stranger", "carol", &carol)).await;
    assert_eq!(
        c.subscribe("app/app1", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        c.subscribe("app/no-such-app", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        c.subscribe("app/+", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    env.append(&app, "dev1", "telemetry", 0).await;
    assert_eq!(ce_id(&b.publish().await.payload), "dev1-0");

    // Sessions of different users with the same client id do not take each other over.
    let (mut c2, _) = V4::ok(env.v4("reader", "carol", &carol)).await;
    c2.subscribe("app/app1", Q4::AtLeastOnce).await;
    env.append(&app, "dev1", "telemetry", 1).await;
    assert_eq!(ce_id(&b.publish().await.payload), "dev1-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_refused() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let end = env.log.end(&stream(&app));

    let (mut c5, _) = V5::ok(env.v5("pub5", "alice", &token)).await;
    c5.client
        .publish("app/app1", Q5::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    let ack = loop {
        if let rumqttc::v5::Event::Incoming(p5::Packet::PubAck(a)) =
            c5.next().await.expect("no error")
        {
            break a;
        }
    };
    assert_eq!(ack.reason, p5::PubAckReason::NotAuthorized);

    let (mut c3, _) = V4::ok(env.v4("pub3", "alice", &token)).await;
    c3.client
        .publish("command/app1/dev1/x", Q4::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    // MQTT 3.1.1 has no negative PUBACK: the connection is closed.
    loop {
        match c3.next().await {
            Err(_) => break,
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a))) => {
                panic!("unexpected PUBACK {a:?}")
            }
            Ok(_) => {}
        }
    }
    assert_eq!(env.log.end(&stream(&app)), end, "nothing was appended");
}
