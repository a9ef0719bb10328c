//! Fuzz target `http_request`: a shim into [`nsqgate::fuzz::http_request`].

fn main() {
    afl::fuzz!(|data: &[u8]| nsqgate::fuzz::http_request(data));
}
