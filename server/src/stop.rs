//! Stop strings over streamed text: the output ends where a stop string first appears, and the stop
//! string is not part of it. Text that might be the start of a stop string is held back until the next
//! piece decides, so a stream never sends text it would have to take back.

pub struct StopText {
    stops: Vec<String>,
    /// Text not yet released: a possible start of a stop string.
    held: String,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> StopText {
        StopText { stops, held: String::new() }
    }

    /// Takes the next piece of text; returns the text that may be sent now and whether a stop string
    /// ended the output (then nothing after it is ever sent).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self.longest_partial_stop();
        let released = self.held.len() - keep;
        (self.held.drain(..released).collect(), false)
    }

    /// The text held back when the output ends for another reason.
    pub fn finish(self) -> String {
        self.held
    }

    /// The longest tail of `held` that is a proper start of some stop string.
    fn longest_partial_stop(&self) -> usize {
        let held = &self.held;
        (1..=held.len())
            .rev()
            .find(|&k| {
                held.is_char_boundary(held.len() - k)
                    && self.stops.iter().any(|s| k < s.len() && s.starts_with(&held[held.len() - k..]))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::StopText;

    /// Feeds pieces; returns what was released and whether it stopped.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for piece in pieces {
            let (text, stopped) = s.push(piece);
            out.push_str(&text);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stops_at_the_first_stop_string_even_across_pieces() {
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
        assert_eq!(run(&["xy", "b"], &["axyb"]), ("a".into(), true));
        assert_eq!(run(&["END"], &["abc EN", "d"]), ("abc ENd".into(), false));
    }

    #[test]
    fn held_text_is_released_only_once_it_cannot_start_a_stop_string() {
        let mut s = StopText::new(vec!["<end>".into()]);
        assert_eq!(s.push("hi <e"), ("hi ".into(), false));
        assert_eq!(s.push("x"), ("<ex".into(), false));
        assert_eq!(s.push("é<"), ("é".into(), false));
        assert_eq!(s.finish(), "<");
    }

    #[test]
    fn no_stop_strings_release_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
