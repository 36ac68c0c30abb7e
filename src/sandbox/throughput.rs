//! The business number's throughput limit the sandbox can simulate (`--throughput`).

/// The number's throughput: at most `limit` messages in any one-second window. Meta: "For
/// each registered business phone number, Cloud API supports up to 80 messages per second
/// (mps) by default [...] If you attempt to send more messages than your current throughput
/// level allows, the API will return error code 130429 until you are within your allowed
/// level again."
/// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput>)
pub(crate) struct Throughput {
    limit: usize,
    /// When the messages of the last second were taken.
    window: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
}

impl Throughput {
    pub(crate) fn new(limit: u32) -> Throughput {
        Throughput {
            limit: limit as usize,
            window: Default::default(),
        }
    }

    /// Counts one message now; false when the last second already holds `limit`.
    pub(crate) fn admit(&self) -> bool {
        let now = std::time::Instant::now();
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
        {
            w.pop_front();
        }
        if w.len() >= self.limit {
            return false;
        }
        w.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Throughput;

    #[test]
    fn a_message_past_the_throughput_in_one_second_is_refused_until_the_second_passes() {
        let t = Throughput::new(3);
        assert!(t.admit() && t.admit() && t.admit());
        assert!(!t.admit(), "a fourth within the second");
        std::thread::sleep(std::time::Duration::from_millis(1010));
        assert!(t.admit(), "the window moved on");
    }
}
