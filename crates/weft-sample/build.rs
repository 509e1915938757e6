//! Generates the sample Echo gRPC API (`weft.sample.v1.Echo`) with protox, so no system
//! `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "weft/sample/v1/echo.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
