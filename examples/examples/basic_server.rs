//! Placeholder until issue 3: prints what it will become.
fn main() {
    println!("basic_server: the warp adapter arrives with issue 3");
}
