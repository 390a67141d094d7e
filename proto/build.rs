//! Compiles `osprey/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["osprey/v1/agent.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .bytes(".osprey.v1.AppendLogRequest.data")
        // Its Debug (in lib.rs) never prints a masked value.
        .skip_debug([".osprey.v1.Variable"])
        .compile_fds(descriptors)?;
    Ok(())
}
