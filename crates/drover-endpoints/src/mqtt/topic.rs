//! Topics: the dialects devices publish in, and the command inboxes they subscribe to.

use drover_model::spec::MqttDialect;
use drover_mqtt::PublishRefusal;

/// Channel and target device of a topic, per dialect.
pub(super) fn route<'t>(
    dialect: &MqttDialect,
    topic: &'t str,
) -> Result<(String, Option<&'t str>), PublishRefusal> {
    if topic.is_empty() {
        return Err(PublishRefusal::TopicNameInvalid);
    }
    Ok(match dialect {
        MqttDialect::DrogueV1 => match topic.split_once('/') {
            Some((channel, device)) if !channel.is_empty() && !device.is_empty() => {
                (channel.to_string(), Some(device))
            }
            Some(_) => return Err(PublishRefusal::TopicNameInvalid),
            None => (topic.to_string(), None),
        },
        MqttDialect::PlainTopic {
            device_prefix: false,
        } => (topic.to_string(), None),
        MqttDialect::PlainTopic {
            device_prefix: true,
        } => match topic.split_once('/') {
            Some((device, channel)) if !device.is_empty() && !channel.is_empty() => {
                (channel.to_string(), Some(device))
            }
            _ => return Err(PublishRefusal::TopicNameInvalid),
        },
    })
}

/// Command inbox filters a device may subscribe to.
pub(super) fn is_command_inbox(filter: &str) -> bool {
    filter == "command/inbox/#"
        || filter
            .strip_prefix("command/inbox/")
            .and_then(|rest| rest.strip_suffix("/#"))
            .is_some_and(|device| !device.contains(['+', '#']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_inboxes() {
        assert!(is_command_inbox("command/inbox/#"));
        assert!(is_command_inbox("command/inbox//#"));
        assert!(is_command_inbox("command/inbox/dev-1/#"));
        assert!(!is_command_inbox("command/inbox/+/#"));
        assert!(!is_command_inbox("#"));
        assert!(!is_command_inbox("command/inbox"));
    }
}
