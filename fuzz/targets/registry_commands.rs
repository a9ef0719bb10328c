//! Fuzz target `registry_commands`: a shim into [`nsqgate::fuzz::registry_commands`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::registry_commands(data));
}
