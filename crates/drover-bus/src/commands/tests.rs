//! The router on one node: delivery, queues, expiry, replies, gateways.
#![allow(clippy::unwrap_used)]

use super::*;

struct Collect(Mutex<Vec<Command>>, Option<SinkRefusal>);

impl CommandSink for Collect {
    fn deliver(&self, c: &Command) -> Result<(), SinkRefusal> {
        if let Some(r) = self.1 {
            return Err(r);
        }
        self.0.lock().unwrap().push(c.clone());
        Ok(())
    }
}

fn cmd(id: &str, device: &str) -> Command {
    Command {
        id: id.into(),
        app: "app".into(),
        app_uid: "u".into(),
        device: device.into(),
        name: "set".into(),
        payload: Bytes::from_static(b"{}"),
        content_type: None,
        expects_reply: false,
    }
}

fn key(d: &str) -> DeviceKey {
    ("u".into(), d.into())
}

#[test]
fn delivers_queues_and_expires() {
    let r = CommandRouter::new(RouterConfig {
        max_queue_per_device: 2,
        max_waiting: 10,
    });
    assert!(matches!(
        r.send(cmd("1", "d"), &[key("d")], None),
        Err(CommandError::Unreachable(d)) if d == "d"
    ));
    assert_eq!(
        r.send(cmd("1", "d"), &[key("d")], Some(Duration::from_secs(60)))
            .expect("routed"),
        Outcome::Queued
    );
    assert_eq!(
        r.send(cmd("2", "d"), &[key("d")], Some(Duration::from_secs(60)))
            .expect("routed"),
        Outcome::Queued
    );
    assert!(matches!(
        r.send(cmd("3", "d"), &[key("d")], Some(Duration::from_secs(60))),
        Err(CommandError::QueueFull(..))
    ));
    let sink = Arc::new(Collect(Mutex::new(Vec::new()), None));
    let reg = r.register(key("d"), sink.clone());
    let ids: Vec<_> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(
        ids,
        ["1", "2"],
        "queued commands delivered in order on connect"
    );
    assert_eq!(
        r.send(cmd("4", "d"), &[key("d")], None).expect("routed"),
        Outcome::Delivered
    );
    drop(reg);
    assert!(
        r.send(cmd("5", "d"), &[key("d")], None).is_err(),
        "unregistered on drop"
    );
    r.send(cmd("6", "d"), &[key("d")], Some(Duration::from_millis(1)))
        .unwrap();
    let expired = r.expire(Instant::now() + Duration::from_secs(1));
    assert_eq!(expired.len(), 1);
    assert_eq!(r.queued(&key("d")), 0);
}

#[test]
fn a_gateway_connecting_takes_the_queued_commands_of_its_devices() {
    let r = CommandRouter::new(RouterConfig::default());
    let targets = [key("d"), key("gw")];
    r.send(cmd("1", "d"), &targets, Some(Duration::from_secs(60)))
        .unwrap();
    r.send(cmd("2", "d"), &targets, Some(Duration::from_secs(60)))
        .unwrap();
    let other = Arc::new(Collect(Mutex::new(Vec::new()), None));
    let _o = r.register(key("stranger"), other.clone());
    assert!(other.0.lock().unwrap().is_empty());
    let gw = Arc::new(Collect(Mutex::new(Vec::new()), None));
    let _g = r.register(key("gw"), gw.clone());
    let ids: Vec<_> = gw.0.lock().unwrap().iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(r.queued(&key("d")), 0);
}

#[test]
fn gateways_and_replies() {
    let r = CommandRouter::new(RouterConfig::default());
    let refusing = Arc::new(Collect(
        Mutex::new(Vec::new()),
        Some(SinkRefusal::NotSubscribed),
    ));
    let _a = r.register(key("d"), refusing);
    let gw = Arc::new(Collect(Mutex::new(Vec::new()), None));
    let _b = r.register(key("gw"), gw.clone());
    let c = Command {
        expects_reply: true,
        ..cmd("r1", "d")
    };
    let mut rx = r.expect_reply(&c, vec!["d".into(), "gw".into()]).unwrap();
    assert_eq!(
        r.send(c, &[key("d"), key("gw")], None).expect("routed"),
        Outcome::Delivered
    );
    assert_eq!(gw.0.lock().unwrap().len(), 1, "the gateway took it");
    let reply = Reply {
        status: 200,
        payload: Bytes::from_static(b"ok"),
        content_type: None,
    };
    assert!(matches!(
        r.reply("u", "other", "r1", reply.clone()),
        Err(ReplyError::NotYours(..))
    ));
    r.reply("u", "gw", "r1", reply.clone()).unwrap();
    assert_eq!(rx.try_recv().unwrap(), reply);
    assert!(matches!(
        r.reply("u", "gw", "r1", reply),
        Err(ReplyError::Unknown(_))
    ));
}
