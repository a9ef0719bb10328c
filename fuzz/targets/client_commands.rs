//! Fuzz target `client_commands`: a shim into [`nsqgate::fuzz::client_commands`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::client_commands(data));
}
