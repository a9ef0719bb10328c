//! Fuzz target `lookupd_reply`: a shim into [`nsqgate::fuzz::lookupd_reply`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::lookupd_reply(data));
}
