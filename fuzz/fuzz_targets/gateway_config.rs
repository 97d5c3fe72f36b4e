//! Any text as the gateway's TOML configuration (with environment
//! overrides): loaded and validated, or refused with problems listed, never
//! a panic.
//!
//! Input: `toml 0xff env` where env lines are `NAME=value`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_bff_fuzz::split2;
use oidc_bff_gateway::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    let (toml, env) = split2(data);
    let (Ok(toml), Ok(env)) = (std::str::from_utf8(toml), std::str::from_utf8(env)) else {
        return;
    };
    // `client_secret_file` makes the loader read a file: a path such as
    // /dev/zero would exhaust memory in the fuzzer rather than exercise the
    // parser (the loader's file read is covered by the gateway's tests).
    if toml.to_ascii_lowercase().contains("file") || env.to_ascii_lowercase().contains("file") {
        return;
    }
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(config) = GatewayConfig::from_toml_str(toml, env) {
        // A loaded configuration renders (redacted) without a panic.
        let _ = config.to_string();
    }
});
