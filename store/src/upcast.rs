//! Upcasters: how older stored shapes of events become today's. One list, applied both
//! when an aggregate loads its stream (the command bus) and when a log record decodes
//! to a typed event (readers of the log), so both always see the same shape.

use std::sync::LazyLock;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};

/// Every upcaster of this release, oldest shape first. None yet: no event's shape has
/// changed since it shipped.
pub fn registered() -> Vec<Box<dyn EventUpcaster>> {
    Vec::new()
}

static REGISTERED: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(registered);

/// `event` in today's shape, through each upcaster that takes it.
pub fn upcast(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// The registered upcasters, for decoding log records.
pub fn all() -> &'static [Box<dyn EventUpcaster>] {
    &REGISTERED
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rename;

    impl EventUpcaster for Rename {
        fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
            event_type == "Old" && event_version == "1"
        }

        fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
            event.event_type = "New".to_owned();
            event.event_version = "2".to_owned();
            event
        }
    }

    #[test]
    fn only_the_shapes_an_upcaster_takes_change() {
        let event = |event_type: &str| SerializedEvent {
            aggregate_id: "a".to_owned(),
            sequence: 1,
            aggregate_type: "T".to_owned(),
            event_type: event_type.to_owned(),
            event_version: "1".to_owned(),
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
        };
        let upcasters: Vec<Box<dyn EventUpcaster>> = vec![Box::new(Rename)];
        assert_eq!(upcast(event("Old"), &upcasters).event_type, "New");
        assert_eq!(upcast(event("Other"), &upcasters).event_type, "Other");
        assert!(all().is_empty(), "no shape has changed yet");
    }
}
