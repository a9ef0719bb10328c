//! Fuzz target `jwt`: a shim into [`nsqgate::fuzz::jwt`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::jwt(data));
}
