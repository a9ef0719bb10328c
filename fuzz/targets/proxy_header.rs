//! Fuzz target `proxy_header`: a shim into [`nsqgate::fuzz::proxy_header`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::proxy_header(data));
}
