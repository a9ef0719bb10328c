//! Fuzz target `server_frames`: a shim into [`nsqgate::fuzz::server_frames`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::server_frames(data));
}
