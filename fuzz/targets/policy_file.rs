//! Fuzz target `policy_file`: a shim into [`nsqgate::fuzz::policy_file`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::policy_file(data));
}
