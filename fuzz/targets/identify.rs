//! Fuzz target `identify`: a shim into [`nsqgate::fuzz::identify`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::identify(data));
}
